// demos/common/cli.cpp: the flag parser (see cli.h).
#include "demos/common/cli.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "engine/backend.h"

namespace mg::demo {

namespace {
std::string join(const std::vector<std::string>& words, const std::string& sep) {
    std::string out;
    for (size_t i = 0; i < words.size(); ++i) out += (i ? sep : "") + words[i];
    return out;
}
std::string format_double(double v) {
    char buf[64];
    auto result = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, result.ptr);
}
}  // namespace

int edit_distance(const std::string& a, const std::string& b) {
    std::vector<int> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = (int)j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= b.size(); ++j)
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1] ? 1 : 0)});
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

std::string shell_quote(const std::string& word) {
    if (word.empty()) return "''";
    bool plain = std::all_of(word.begin(), word.end(), [](char c) {
        return std::isalnum((unsigned char)c) || std::string("-_./=:,+@%").find(c) != std::string::npos;
    });
    if (plain) return word;
    std::string out = "'";
    for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

Cli::Cli(std::string program, std::string description)
    : program_(std::move(program)), description_(std::move(description)), command_line_(program_) {}

Cli::Flag& Cli::add(const std::string& name, const std::string& help) {
    if (name.empty() || name[0] == '-' || name.find('=') != std::string::npos)
        throw std::logic_error("Cli::flag: bad flag name '" + name + "' (give it without dashes)");
    if (find(name) || name == "help")
        throw std::logic_error("Cli::flag: --" + name + " is declared twice");
    flags_.push_back(std::make_unique<Flag>());
    flags_.back()->name = name;
    flags_.back()->help = help;
    return *flags_.back();
}

Cli::Flag* Cli::find(const std::string& name) {
    for (auto& f : flags_)
        if (f->name == name) return f.get();
    return nullptr;
}
const Cli::Flag* Cli::find(const std::string& name) const {
    for (const auto& f : flags_)
        if (f->name == name) return f.get();
    return nullptr;
}

bool& Cli::flag(const std::string& name, bool default_value, const std::string& help) {
    Flag& f = add(name, help);
    f.value = default_value;
    f.default_text = default_value ? "true" : "false";
    return std::get<bool>(f.value);
}

int64_t& Cli::flag(const std::string& name, int64_t default_value, const std::string& help) {
    Flag& f = add(name, help);
    f.value = default_value;
    f.default_text = std::to_string(default_value);
    return std::get<int64_t>(f.value);
}

double& Cli::flag(const std::string& name, double default_value, const std::string& help) {
    Flag& f = add(name, help);
    f.value = default_value;
    f.default_text = format_double(default_value);
    return std::get<double>(f.value);
}

std::string& Cli::flag(const std::string& name, std::string default_value, const std::string& help,
                       std::vector<std::string> choices) {
    if (!choices.empty() && std::find(choices.begin(), choices.end(), default_value) == choices.end())
        throw std::logic_error("Cli::flag: the default '" + default_value + "' of --" + name +
                               " is not one of its choices");
    Flag& f = add(name, help);
    f.default_text = default_value.empty() ? "" : default_value;
    f.value = std::move(default_value);
    f.choices = std::move(choices);
    return std::get<std::string>(f.value);
}

void Cli::example(const std::string& command_line, const std::string& what) {
    examples_.emplace_back(command_line, what);
}

void Cli::set_value(Flag& f, const std::string& text) {
    const std::string where = "--" + f.name;
    if (auto* b = std::get_if<bool>(&f.value)) {
        if (text == "true" || text == "1" || text == "yes" || text == "on") *b = true;
        else if (text == "false" || text == "0" || text == "no" || text == "off") *b = false;
        else throw CliError(where + " is a switch: give it alone, or as " + where + "=true / " + where +
                            "=false; got '" + text + "'");
    } else if (auto* i = std::get_if<int64_t>(&f.value)) {
        int64_t v = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (text.empty() || ec != std::errc() || end != text.data() + text.size())
            throw CliError(where + " expects an integer, got '" + text + "'" +
                           (ec == std::errc::result_out_of_range ? " (out of range)" : ""));
        *i = v;
    } else if (auto* d = std::get_if<double>(&f.value)) {
        double v = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (text.empty() || ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v))
            throw CliError(where + " expects a number, got '" + text + "'");
        *d = v;
    } else {
        if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), text) == f.choices.end())
            throw CliError(where + " must be one of " + join(f.choices, ", ") + "; got '" + text + "'");
        std::get<std::string>(f.value) = text;
    }
    f.given = true;
}

Cli::Outcome Cli::parse_args(const std::vector<std::string>& args) {
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (arg == "--help" || arg == "-h") return Outcome::Help;
        if (arg.size() < 3 || arg.compare(0, 2, "--") != 0)
            throw CliError("unexpected argument '" + arg + "' (flags start with --)");
        size_t eq = arg.find('=');
        std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
        Flag* f = find(name);
        if (!f) {
            std::string best;
            int best_distance = 3;  // suggest only close names
            for (const auto& other : flags_) {
                int d = edit_distance(name, other->name);
                if (d < best_distance) best_distance = d, best = other->name;
            }
            throw CliError("unknown flag --" + name + (best.empty() ? "" : " (did you mean --" + best + "?)"));
        }
        if (eq != std::string::npos) {
            set_value(*f, arg.substr(eq + 1));
        } else if (std::holds_alternative<bool>(f->value)) {
            set_value(*f, "true");  // a bare switch; never takes the next word
        } else {
            // The next word is the value; a word that starts with "--" is the next flag, so the
            // value is missing (negative numbers like -1 are fine).
            if (i + 1 >= args.size() || args[i + 1].compare(0, 2, "--") == 0)
                throw CliError("--" + name + " needs a value");
            set_value(*f, args[++i]);
        }
    }
    for (const auto& validator : checks_) validator();
    return Outcome::Run;
}

void Cli::parse(int argc, const char* const* argv) {
    std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + std::max(argc, 0));
    command_line_ = argc > 0 ? shell_quote(argv[0]) : program_;
    for (const std::string& a : args) {
        command_line_ += ' ';
        command_line_ += shell_quote(a);
    }
    try {
        if (parse_args(args) == Outcome::Help) {
            std::cout << usage();
            std::exit(0);
        }
    } catch (const CliError& e) {
        std::cerr << program_ << ": error: " << e.what() << "; see --help\n";
        std::exit(2);
    }
}

bool Cli::given(const std::string& name) const {
    const Flag* f = find(name);
    if (!f) throw std::logic_error("Cli::given: no flag --" + name + " was declared");
    return f->given;
}

std::string Cli::usage() const {
    std::ostringstream os;
    os << program_ << ": " << description_ << "\n\nusage: " << program_ << " [flags]\n\nflags:\n";
    std::vector<std::string> left;
    size_t width = std::string("--help").size();
    for (const auto& f : flags_) {
        std::string l = "--" + f->name;
        if (std::holds_alternative<int64_t>(f->value)) l += " N";
        else if (std::holds_alternative<double>(f->value)) l += " X";
        else if (!f->choices.empty()) l += ' ' + join(f->choices, "|");
        else if (std::holds_alternative<std::string>(f->value)) l += " S";
        left.push_back(l);
        width = std::max(width, l.size());
    }
    for (size_t i = 0; i < flags_.size(); ++i) {
        const Flag& f = *flags_[i];
        os << "  " << left[i] << std::string(width - left[i].size() + 3, ' ') << f.help;
        if (!std::holds_alternative<bool>(f.value))
            os << " (default: " << (f.default_text.empty() ? "none" : f.default_text) << ")";
        os << "\n";
    }
    os << "  --help" << std::string(width - 6 + 3, ' ') << "print this help and exit\n";
    if (!examples_.empty()) {
        os << "\nexamples:\n";
        for (const auto& [command, what] : examples_)
            os << "  " << command << (what.empty() ? "" : "\n      " + what) << "\n";
    }
    return os.str();
}

Json Cli::to_json() const {
    Json j = Json::object();
    for (const auto& f : flags_)
        std::visit([&](const auto& v) { j[f->name] = v; }, f->value);
    return j;
}

StandardFlags add_standard_flags(Cli& cli, int64_t default_seed) {
    StandardFlags flags{
        cli.flag("device", "cpu", "where tensors live", {"cpu", "cuda"}),
        cli.flag("seed", default_seed, "seed of every random draw (data, initialisation, shuffling)"),
        cli.flag("quick", false, "a fast smoke run (under a minute on 2 CPU cores)"),
        cli.flag("save", "", "write a checkpoint (safetensors) here after training"),
        cli.flag("load", "", "start from this checkpoint: resume training, or see --evaluate"),
        cli.flag("evaluate", false, "with --load: only evaluate the checkpoint, no training"),
        cli.flag("out", "runs/" + cli.program(), "folder for metrics.json, report.md and the plots"),
        cli.flag("threads", 0, "CPU threads (OpenMP); 0 keeps the OpenMP default"),
    };
    cli.check([flags] {
        if (flags.evaluate && flags.load.empty())
            throw CliError("--evaluate needs a checkpoint to evaluate: add --load FILE");
        if (flags.threads < 0) throw CliError("--threads must be >= 0, got " + std::to_string(flags.threads));
        if (flags.seed < 0) throw CliError("--seed must be >= 0, got " + std::to_string(flags.seed));
    });
    return flags;
}

int apply_standard_flags(const StandardFlags& flags) {
    if (flags.threads > 0) omp_set_num_threads((int)flags.threads);
    return omp_get_max_threads();
}

Device selected_device(const StandardFlags& flags) {
    if (flags.device == "cpu") return Device::CPU;
    if (flags.device == "cuda") {
        if (!device_available(Device::CUDA)) throw std::runtime_error("--device cuda: " + std::string(cuda_unavailable_reason()));
        return Device::CUDA;
    }
    // parse() only lets cpu and cuda through; this is for flags set by hand.
    throw std::invalid_argument("--device must be cpu or cuda, got '" + flags.device + "'");
}

}  // namespace mg::demo
