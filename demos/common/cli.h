// demos/common/cli.h: the command-line flags of a demo, declared in one place.
//
//   mg::demo::Cli cli("01_sentiment_moe", "Four experts learn to split a sentiment task.");
//   int64_t& epochs = cli.flag("epochs", 20, "training epochs");
//   double& lr      = cli.flag("lr", 1e-3, "Adam learning rate");
//   std::string& router = cli.flag("router", "softmax", "gating", {"softmax", "noisy"});
//   mg::demo::StandardFlags std_flags = mg::demo::add_standard_flags(cli);
//   cli.parse(argc, argv);      // fills epochs, lr, ... from argv
//   if (std_flags.quick && !cli.given("epochs")) epochs = 3;   // --quick lowers only defaults
//
// Accepted forms: --name value, --name=value; booleans as --quick, --quick=true, --quick=false
// (a bare boolean never takes the next word as its value). Types: bool, int64, double, string,
// and strings limited to a list of choices. A flag given twice keeps the last value.
//
// Errors. Cli::parse() is for main(): --help / -h prints the usage to stdout and exits with 0;
// an unknown flag, a missing or bad value prints one line naming the flag to stderr, e.g.
//   01_sentiment_moe: error: unknown flag --epoch (did you mean --epochs?); see --help
// and exits with status 2 (the usual status for a usage error). Cli::parse_args() does the same
// work without exiting: it throws CliError, and returns Cli::Outcome::Help for --help (tests).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "demos/common/json.h"
#include "engine/device.h"

namespace mg::demo {

// A usage error on the command line; what() names the flag and the value.
class CliError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Cli {
public:
    Cli(std::string program, std::string description);
    Cli(const Cli&) = delete;             // the references handed out point into this object
    Cli& operator=(const Cli&) = delete;

    // Declare a flag (name without the leading dashes) with its default and a one-line help.
    // The returned reference stays valid as long as the Cli lives; parse() writes into it.
    // Declaring the same name twice throws std::logic_error.
    bool& flag(const std::string& name, bool default_value, const std::string& help);
    int64_t& flag(const std::string& name, int64_t default_value, const std::string& help);
    int64_t& flag(const std::string& name, int default_value, const std::string& help) {
        return flag(name, (int64_t)default_value, help);
    }
    double& flag(const std::string& name, double default_value, const std::string& help);
    // choices: when not empty, the value must be one of them (and the default too).
    std::string& flag(const std::string& name, std::string default_value, const std::string& help,
                      std::vector<std::string> choices = {});
    std::string& flag(const std::string& name, const char* default_value, const std::string& help,
                      std::vector<std::string> choices = {}) {
        return flag(name, std::string(default_value), help, std::move(choices));
    }

    // A check that runs at the end of parse_args(), after every flag is read (combinations of
    // flags: "--evaluate needs --load"). A CliError it throws is reported like any usage error.
    void check(std::function<void()> validator) { checks_.push_back(std::move(validator)); }

    // An example command shown at the end of --help ("make run" style lines).
    void example(const std::string& command_line, const std::string& what = "");

    enum class Outcome { Run, Help };
    // Parses the arguments (without the program name). Throws CliError on a usage error.
    Outcome parse_args(const std::vector<std::string>& args);
    // For main(): --help prints usage() and exits 0; a usage error prints it and exits 2.
    // Also remembers the command line (command_line()).
    void parse(int argc, const char* const* argv);
    void parse(int argc, char** argv) { parse(argc, const_cast<const char* const*>(argv)); }

    // Was this flag on the command line (as opposed to keeping its default)? Throws
    // std::logic_error for a name that was never declared (a typo in the demo).
    bool given(const std::string& name) const;

    const std::string& program() const { return program_; }
    std::string usage() const;
    // The command that started this run, shell-quoted where needed, for report.md.
    std::string command_line() const { return command_line_; }
    // Every flag and its value after parsing, as a JSON object (the "config" of metrics.json).
    Json to_json() const;

private:
    struct Flag {
        std::string name, help;
        std::variant<bool, int64_t, double, std::string> value;
        std::string default_text;
        std::vector<std::string> choices;
        bool given = false;
    };
    Flag& add(const std::string& name, const std::string& help);
    Flag* find(const std::string& name);
    const Flag* find(const std::string& name) const;
    void set_value(Flag& flag, const std::string& text);

    std::string program_, description_;
    std::vector<std::unique_ptr<Flag>> flags_;  // unique_ptr: references to values stay valid
    std::vector<std::pair<std::string, std::string>> examples_;
    std::vector<std::function<void()>> checks_;
    std::string command_line_;
};

// The flags every demo has (DESIGN.md). References into the Cli: read them after parse().
struct StandardFlags {
    std::string& device;    // --device cpu|cuda
    int64_t& seed;          // --seed N: data, initialisation and shuffling
    bool& quick;            // --quick: a smoke run (under a minute on 2 cores)
    std::string& save;      // --save FILE: write a checkpoint at the end of training
    std::string& load;      // --load FILE: start from a checkpoint (resumes training)
    bool& evaluate;         // --evaluate: with --load, evaluate only, no training
    std::string& out;       // --out DIR: where metrics.json, report.md and the plots go
    int64_t& threads;       // --threads N: OpenMP threads (0 = the OpenMP default)
};
// Declares the standard flags (--out defaults to runs/<program>) and their checks: --evaluate
// needs --load, --threads and --seed are >= 0.
StandardFlags add_standard_flags(Cli& cli, int64_t default_seed = 0);
// After parse(): sets the OpenMP thread count when --threads > 0. Returns the threads in use.
int apply_standard_flags(const StandardFlags& flags);
// After parse(): the device that --device names, checked to be usable here. Throws
// std::runtime_error("--device cuda: <why>") when CUDA is asked for but cannot be used (built
// without nvcc, no GPU, driver too old: the reason comes from mg::cuda_unavailable_reason()), so a
// demo stops before building anything. A demo puts its model, data and every tensor it makes on
// this device:
//   const Device device = selected_device(flags);
//   model.to(device);                       // before the optimizer, so its state follows
//   BatchIterator batches(data, 64, gen, true, false, device);
Device selected_device(const StandardFlags& flags);

// The edit distance between two words (for "did you mean" hints).
int edit_distance(const std::string& a, const std::string& b);
// A word quoted for a POSIX shell when it needs it: "a b" -> 'a b'.
std::string shell_quote(const std::string& word);

}  // namespace mg::demo
