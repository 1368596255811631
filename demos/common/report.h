// demos/common/report.h: the run folder of a demo: report.md, metrics.json and the files beside.
//
//   mg::demo::Report report("Level 1: four experts on synthetic sentiment");
//   report.paragraph("Four MLP experts ...");
//   report.table({"model", "accuracy"}, {{"MoE top-2", 0.9312}, {"logistic regression", 0.5710}});
//   report.image("utilization.png", "tokens per expert");       // a PNG in the same folder
//   report.code(cli.command_line(), "sh");                       // how to reproduce the run
//   report.write(out_dir + "/report.md");
//
// The report is plain Markdown, readable on GitHub or in any editor, with the pictures inline
// (image paths are relative to report.md, so the folder can be moved or zipped). Numbers in tables
// are formatted by format_number() unless a Cell says otherwise.
//
// Files: every writer here creates the parent folders (std::filesystem::create_directories) and
// throws std::runtime_error naming the path when it cannot write.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "demos/common/cli.h"
#include "demos/common/json.h"

namespace mg::demo {

// One table cell: text, or a number with its formatting.
struct Cell {
    std::string text;
    Cell(std::string s) : text(std::move(s)) {}
    Cell(const char* s) : text(s) {}
    Cell(double value);                       // format_number(value)
    Cell(float value) : Cell((double)value) {}
    Cell(int value) : Cell((int64_t)value) {}
    Cell(int64_t value);                      // 12345 -> "12,345"
    Cell(uint64_t value) : Cell((int64_t)value) {}
    static Cell fixed(double value, int decimals);   // fixed(0.93125, 2) -> "0.93"
    static Cell percent(double fraction, int decimals = 1);  // percent(0.9312) -> "93.1%"
};

// Numbers for people: 4 significant digits ("0.9312", "12.35", "0.0001234"), thousands
// separators from 10,000 up ("41,234"), "1.2e-07" when very small, "nan"/"inf" as such.
std::string format_number(double value);
// 12345 -> "12,345"
std::string format_integer(int64_t value);

class Report {
public:
    explicit Report(std::string title);

    Report& heading(const std::string& text, int level = 2);   // "## text"
    Report& paragraph(const std::string& markdown);
    Report& bullets(const std::vector<std::string>& items);
    // A Markdown table; every row must have as many cells as the header (else std::invalid_argument).
    // Pipes in cells are escaped.
    Report& table(const std::vector<std::string>& header, const std::vector<std::vector<Cell>>& rows);
    // ![alt](relative_path): a picture beside report.md.
    Report& image(const std::string& relative_path, const std::string& alt);
    // A fenced code block (the command line used, a configuration).
    Report& code(const std::string& text, const std::string& language = "");

    std::string markdown() const;
    void write(const std::string& path) const;

private:
    std::string text_;
};

// ---- files and the run's identity -------------------------------------------------------------
// Creates the folder and its parents; throws naming the path on failure.
void ensure_directory(const std::string& path);
// Writes text to path (creating the parent folders), through a temporary file renamed into
// place, so that a crash never leaves half a file. Throws std::runtime_error naming the path.
void write_text_file(const std::string& path, const std::string& text);
// The output of `git rev-parse --short HEAD` (plus "-dirty" when the tree has changes), or
// "unknown" when git or the repository is not there.
std::string git_revision();
// argv as one shell-quoted line: `./build/demos/01_sentiment_moe --quick --seed 3`.
std::string command_line(int argc, const char* const* argv);
// The current UTC time as "2025-01-31T12:34:56Z".
std::string utc_timestamp();
// What every metrics.json records about the run itself (DESIGN.md): "device", "threads" (OpenMP
// threads in use), "seed", "git_revision", "command" (cli.command_line()), "timestamp", and
// "config" (every flag and its value, cli.to_json()). Add the demo's metrics to the result.
Json run_info(const Cli& cli, const StandardFlags& flags);

// Small helpers every demo needs.
// The median (the mean of the middle two for an even count); NaN for an empty vector.
double median(std::vector<double> values);
// {"expert 0", "expert 1", ...}: labels for plot axes and tables.
std::vector<std::string> numbered(const std::string& prefix, int64_t n);
// A monotonic clock in seconds (std::chrono::steady_clock), for timing pieces of a run.
double seconds_now();
// Waits until `device` has finished the work queued on it (nothing to wait for on the CPU). A GPU
// runs kernels asynchronously: call this before reading the clock at the end of a timed piece
// that has no item() or to(cpu) in it, or the time counts only the launches.
void wait_for_device(Device device);

}  // namespace mg::demo
