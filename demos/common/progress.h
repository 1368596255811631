// demos/common/progress.h: a training progress bar that keeps CI logs short.
//
//   mg::demo::Progress bar(total_steps, "train");
//   for (int64_t step = 1; step <= total_steps; ++step) {
//       ...
//       bar.update(step, {{"loss", loss}, {"acc", acc}}, batch_size);
//   }
//   bar.finish();
//
// On a terminal (stdout is a tty) one line is redrawn in place with '\r', at most ~10 times a
// second:
//   train [#######.............]  660/1880  35% | loss 0.4127 acc 0.8594 | 41.2k samples/s | 0:03<0:05
// Elsewhere (a pipe, a CI log) it prints a plain line each time another 10% of the steps is done,
// so a run leaves about ten lines. total_steps may be 0 (nothing to train, e.g. --evaluate). finish() prints the final line (and ends the terminal line).
// Time and throughput count from the construction of the bar (make it just before the loop);
// the ETA is the time per step so far times the steps left. note() prints a message without
// breaking the bar.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace mg::demo {

using Metrics = std::vector<std::pair<std::string, double>>;

struct ProgressOptions {
    std::ostream* out = nullptr;       // where to draw; nullptr = std::cout
    int interactive = -1;              // 1: redraw in place, 0: plain lines, -1: isatty(stdout)
    double redraw_seconds = 0.1;       // interactive: the shortest time between two redraws
    int plain_lines = 10;              // plain mode: a line each 1/plain_lines of the steps
    int bar_width = 20;                // interactive: characters of the [###...] bar
    // The clock in seconds; empty = std::chrono::steady_clock. Tests inject a fake one.
    std::function<double()> clock{};
};

class Progress {
public:
    Progress(int64_t total_steps, std::string label = "train", ProgressOptions options = {});
    ~Progress();  // finishes the line if finish() was not called

    // step = steps done so far (1..total); samples = samples processed in the steps since the
    // last update (for the throughput).
    void update(int64_t step, const Metrics& metrics = {}, int64_t samples = 0);
    // Prints the final line: the last metrics of update(), with these added (or replacing those of
    // the same name). Stops the clock: elapsed_seconds() and samples_per_second() stay fixed.
    // A bar that had no update and gets no metrics prints nothing.
    void finish(const Metrics& metrics = {});
    // Prints a line of text above the bar (an evaluation result, a warning).
    void note(const std::string& text);

    double elapsed_seconds() const;      // since construction (until finish())
    double samples_per_second() const;   // samples / elapsed seconds
    int64_t samples() const { return samples_; }
    bool interactive() const { return interactive_; }
    // The status line as it would be drawn now (without the bar graphic in plain mode).
    std::string line() const;

private:
    double now() const;
    void merge_metrics(const Metrics& metrics);
    void draw(bool final_line);

    int64_t total_;
    std::string label_;
    ProgressOptions options_;
    std::ostream* out_;
    bool interactive_;
    int64_t step_ = 0, samples_ = 0;
    Metrics metrics_;
    double start_ = 0, end_ = 0, last_draw_ = -1e300;
    bool finished_ = false;
    int64_t last_plain_bucket_ = 0;
    size_t last_width_ = 0;  // interactive: characters of the last line drawn (to blank leftovers)
};

// "0:07", "12:03", "1:02:03"
std::string format_duration(double seconds);
// 950 -> "950", 41234 -> "41.2k", 3.2e6 -> "3.2M"
std::string format_count(double value);

}  // namespace mg::demo
