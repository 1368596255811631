// demos/common/progress.cpp: the progress bar (see progress.h).
#include "demos/common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace mg::demo {

std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    int64_t s = (int64_t)std::llround(seconds);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                      (long long)(s % 60));
    else
        std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
    return buf;
}

std::string format_count(double value) {
    char buf[32];
    if (!std::isfinite(value)) return "?";
    if (std::abs(value) >= 1e9) std::snprintf(buf, sizeof buf, "%.1fG", value / 1e9);
    else if (std::abs(value) >= 1e6) std::snprintf(buf, sizeof buf, "%.1fM", value / 1e6);
    else if (std::abs(value) >= 1e4) std::snprintf(buf, sizeof buf, "%.1fk", value / 1e3);
    else std::snprintf(buf, sizeof buf, "%.0f", value);
    return buf;
}

Progress::Progress(int64_t total_steps, std::string label, ProgressOptions options)
    : total_(std::max<int64_t>(total_steps, 1)), label_(std::move(label)), options_(std::move(options)) {
    out_ = options_.out ? options_.out : &std::cout;
    interactive_ = options_.interactive >= 0 ? options_.interactive == 1 : isatty(STDOUT_FILENO) == 1;
    start_ = now();
}

Progress::~Progress() {
    // A bar left mid-line (an exception unwound the loop) still ends its line.
    if (!finished_ && interactive_ && last_width_ > 0) *out_ << "\n" << std::flush;
}

double Progress::now() const {
    if (options_.clock) return options_.clock();
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

double Progress::elapsed_seconds() const { return (finished_ ? end_ : now()) - start_; }

void Progress::merge_metrics(const Metrics& metrics) {
    for (const auto& [name, value] : metrics) {
        auto same = std::find_if(metrics_.begin(), metrics_.end(), [&](const auto& m) { return m.first == name; });
        if (same != metrics_.end()) same->second = value;
        else metrics_.emplace_back(name, value);
    }
}

double Progress::samples_per_second() const {
    double t = elapsed_seconds();
    return t > 0 ? samples_ / t : 0.0;
}

std::string Progress::line() const {
    std::string s = label_;
    if (interactive_) {
        int width = std::max(options_.bar_width, 1);
        int filled = (int)(width * std::min<int64_t>(step_, total_) / total_);
        s += " [" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
    }
    // Step counter padded to the width of the total so that the line does not jump.
    std::string total_text = std::to_string(total_), step_text = std::to_string(step_);
    s.append(1 + total_text.size() - std::min(total_text.size(), step_text.size()), ' ');
    s += step_text;
    s += '/';
    s += total_text;
    char pct[16];
    std::snprintf(pct, sizeof pct, " %3d%%", (int)(100 * std::min<int64_t>(step_, total_) / total_));
    s += pct;
    if (!metrics_.empty()) {
        s += " |";
        for (const auto& [name, value] : metrics_) {
            char buf[48];
            if (std::abs(value) < 1e4) std::snprintf(buf, sizeof buf, " %s %.4f", name.c_str(), value);
            else std::snprintf(buf, sizeof buf, " %s %.4g", name.c_str(), value);
            s += buf;
        }
    }
    double elapsed = elapsed_seconds();
    if (samples_ > 0) s += " | " + format_count(samples_per_second()) + " samples/s";
    s += " | " + format_duration(elapsed);
    if (step_ > 0 && step_ < total_) s += '<' + format_duration(elapsed / step_ * (total_ - step_));
    return s;
}

void Progress::draw(bool final_line) {
    std::string s = line();
    if (interactive_) {
        std::string padded = s;
        if (padded.size() < last_width_) padded += std::string(last_width_ - padded.size(), ' ');
        *out_ << "\r" << padded;
        if (final_line) *out_ << "\n";
        last_width_ = final_line ? 0 : s.size();
    } else {
        *out_ << s << "\n";
    }
    *out_ << std::flush;
    last_draw_ = now();
}

void Progress::update(int64_t step, const Metrics& metrics, int64_t samples) {
    step_ = step;
    samples_ += samples;
    if (!metrics.empty()) metrics_ = metrics;
    if (interactive_) {
        if (now() - last_draw_ >= options_.redraw_seconds || step_ >= total_) draw(false);
    } else {
        int lines = std::max(options_.plain_lines, 1);
        int64_t bucket = std::min<int64_t>(step_, total_) * lines / total_;
        if (bucket > last_plain_bucket_) {
            last_plain_bucket_ = bucket;
            draw(false);
        }
    }
}

void Progress::finish(const Metrics& metrics) {
    if (finished_) return;
    merge_metrics(metrics);
    if (step_ == 0 && metrics_.empty()) {  // nothing ran (e.g. --evaluate): nothing to say
        end_ = now();
        finished_ = true;
        return;
    }
    // Plain mode already printed the 100% line when the last update reached it and nothing
    // changed since; print again only when there is something new.
    bool already = !interactive_ && last_plain_bucket_ >= std::max(options_.plain_lines, 1) && metrics.empty();
    if (!already) draw(true);
    end_ = now();
    finished_ = true;
}

void Progress::note(const std::string& text) {
    if (interactive_ && last_width_ > 0) {
        *out_ << "\r" << std::string(last_width_, ' ') << "\r" << text << "\n";
        last_width_ = 0;
        draw(false);
    } else {
        *out_ << text << "\n" << std::flush;
    }
}

}  // namespace mg::demo
