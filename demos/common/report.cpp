// demos/common/report.cpp: the Markdown report builder and the file helpers (see report.h).
#include "demos/common/report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include <omp.h>

#include "engine/backend.h"

namespace mg::demo {

std::string format_integer(int64_t value) {
    std::string digits = std::to_string(value < 0 ? -(uint64_t)value : (uint64_t)value);
    std::string out;
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return (value < 0 ? "-" : "") + out;
}

std::string format_number(double value) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    double a = std::abs(value);
    if (a >= 1e4 && a < 1e15) return format_integer((int64_t)std::llround(value));
    char buf[64];
    if (a != 0 && a < 1e-4) {
        std::snprintf(buf, sizeof buf, "%.2g", value);
        return buf;
    }
    std::snprintf(buf, sizeof buf, "%.4g", value);  // 4 significant digits, no exponent in this range
    return buf;
}

Cell::Cell(double value) : text(format_number(value)) {}
Cell::Cell(int64_t value) : text(format_integer(value)) {}

Cell Cell::fixed(double value, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
    return Cell(std::string(buf));
}

Cell Cell::percent(double fraction, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f%%", decimals, 100.0 * fraction);
    return Cell(std::string(buf));
}

Report::Report(std::string title) { text_ = "# " + title + "\n"; }

Report& Report::heading(const std::string& text, int level) {
    text_ += '\n';
    text_.append((size_t)std::clamp(level, 1, 6), '#');
    text_ += ' ';
    text_ += text;
    text_ += '\n';
    return *this;
}

Report& Report::paragraph(const std::string& markdown) {
    text_ += "\n" + markdown + "\n";
    return *this;
}

Report& Report::bullets(const std::vector<std::string>& items) {
    text_ += "\n";
    for (const std::string& item : items) text_ += "- " + item + "\n";
    return *this;
}

namespace {
std::string table_cell(const std::string& text) {
    std::string out;
    for (char c : text) {
        if (c == '|') out += "\\|";
        else if (c == '\n') out += ' ';
        else out += c;
    }
    return out;
}
}  // namespace

Report& Report::table(const std::vector<std::string>& header, const std::vector<std::vector<Cell>>& rows) {
    if (header.empty()) throw std::invalid_argument("Report::table: the header is empty");
    std::string t = "\n|";
    for (const std::string& h : header) t += ' ' + table_cell(h) + " |";
    t += "\n|";
    for (size_t i = 0; i < header.size(); ++i) t += "---|";
    t += "\n";
    for (size_t r = 0; r < rows.size(); ++r) {
        if (rows[r].size() != header.size())
            throw std::invalid_argument("Report::table: row " + std::to_string(r) + " has " +
                                        std::to_string(rows[r].size()) + " cells, the header " +
                                        std::to_string(header.size()));
        t += "|";
        for (const Cell& c : rows[r]) t += ' ' + table_cell(c.text) + " |";
        t += "\n";
    }
    text_ += t;
    return *this;
}

Report& Report::image(const std::string& relative_path, const std::string& alt) {
    text_ += "\n![" + alt + "](" + relative_path + ")\n";
    return *this;
}

Report& Report::code(const std::string& text, const std::string& language) {
    // A fence longer than any run of backticks inside the text.
    size_t longest = 0, run = 0;
    for (char c : text) {
        run = c == '`' ? run + 1 : 0;
        longest = std::max(longest, run);
    }
    std::string fence(std::max<size_t>(3, longest + 1), '`');
    text_ += "\n" + fence + language + "\n" + text + (text.empty() || text.back() != '\n' ? "\n" : "") + fence + "\n";
    return *this;
}

std::string Report::markdown() const { return text_; }

void Report::write(const std::string& path) const { write_text_file(path, text_); }

// ---- files ---------------------------------------------------------------------------------------

void ensure_directory(const std::string& path) {
    if (path.empty()) return;
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec || !std::filesystem::is_directory(path))
        throw std::runtime_error("cannot create the folder " + path + ": " +
                                 (ec ? ec.message() : std::string("a file of that name is in the way")));
}

void write_text_file(const std::string& path, const std::string& text) {
    std::filesystem::path p(path);
    if (p.has_parent_path()) ensure_directory(p.parent_path().string());
    std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary);
        if (!f) throw std::runtime_error("cannot write " + path + ": cannot open " + tmp);
        f.write(text.data(), (std::streamsize)text.size());
        f.flush();
        if (!f) throw std::runtime_error("cannot write " + path + ": write to " + tmp + " failed");
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::filesystem::remove(tmp, ec);
        throw std::runtime_error("cannot write " + path + ": rename failed");
    }
}

namespace {
std::string run_command(const char* command, bool* ok) {
    *ok = false;
    FILE* pipe = popen(command, "r");
    if (!pipe) return "";
    std::string out;
    char buf[256];
    while (std::fgets(buf, sizeof buf, pipe)) out += buf;
    *ok = pclose(pipe) == 0;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == ' ')) out.pop_back();
    return out;
}
}  // namespace

std::string git_revision() {
    bool ok = false;
    std::string rev = run_command("git rev-parse --short HEAD 2>/dev/null", &ok);
    if (!ok || rev.empty()) return "unknown";
    bool status_ok = false;
    std::string changes = run_command("git status --porcelain --untracked-files=no 2>/dev/null", &status_ok);
    if (status_ok && !changes.empty()) rev += "-dirty";
    return rev;
}

std::string command_line(int argc, const char* const* argv) {
    std::string line;
    for (int i = 0; i < argc; ++i) {
        if (i > 0) line += ' ';
        line += shell_quote(argv[i]);
    }
    return line;
}

std::string utc_timestamp() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

Json run_info(const Cli& cli, const StandardFlags& flags) {
    Json info = Json::object();
    info["device"] = flags.device;
    info["threads"] = omp_get_max_threads();
    info["seed"] = flags.seed;
    info["git_revision"] = git_revision();
    info["command"] = cli.command_line();
    info["timestamp"] = utc_timestamp();
    info["config"] = cli.to_json();
    return info;
}

double median(std::vector<double> values) {
    if (values.empty()) return std::nan("");
    std::sort(values.begin(), values.end());
    const size_t n = values.size();
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

std::vector<std::string> numbered(const std::string& prefix, int64_t n) {
    std::vector<std::string> out;
    for (int64_t i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
    return out;
}

double seconds_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void wait_for_device(Device device) {
    if (device == Device::CPU) return;  // CPU kernels have finished when they return
    const DeviceHooks& hooks = device_hooks(device);
    if (hooks.synchronize) hooks.synchronize();
}

}  // namespace mg::demo
