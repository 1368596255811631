// tests/test_demokit.cpp: the demo kit of demos/common/: flags, JSON, report.md, progress bar.
#include <doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "demos/common/cli.h"
#include "demos/common/json.h"
#include "demos/common/progress.h"
#include "demos/common/report.h"
#include "engine/backend.h"

using namespace mg::demo;

namespace {
std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}
std::string temp_dir(const std::string& name) {
    auto dir = std::filesystem::temp_directory_path() / ("moegrad_test_demokit_" + name);
    std::filesystem::remove_all(dir);
    return dir.string();
}
std::string cli_error(Cli& cli, const std::vector<std::string>& args) {
    try {
        cli.parse_args(args);
    } catch (const CliError& e) {
        return e.what();
    }
    return "(no error)";
}
}  // namespace

TEST_CASE("cli: defaults, both value forms, switches and given()") {
    Cli cli("demo", "a test demo");
    int64_t& epochs = cli.flag("epochs", 20, "training epochs");
    double& lr = cli.flag("lr", 1e-3, "learning rate");
    bool& quick = cli.flag("quick", false, "fast run");
    bool& plot = cli.flag("plot", true, "write plots");
    std::string& device = cli.flag("device", "cpu", "device", {"cpu", "cuda"});
    std::string& name = cli.flag("name", "", "a name");

    CHECK(cli.parse_args({}) == Cli::Outcome::Run);
    CHECK(epochs == 20);
    CHECK(lr == 1e-3);
    CHECK_FALSE(quick);
    CHECK_FALSE(cli.given("epochs"));

    CHECK(cli.parse_args({"--epochs", "5", "--lr=0.01", "--quick", "--plot=false", "--device=cuda", "--name",
                          "a b"}) == Cli::Outcome::Run);
    CHECK(epochs == 5);
    CHECK(lr == 0.01);
    CHECK(quick);
    CHECK_FALSE(plot);
    CHECK(device == "cuda");
    CHECK(name == "a b");
    CHECK(cli.given("epochs"));
    CHECK(cli.given("quick"));
}

TEST_CASE("cli: negative numbers, last value wins, --help") {
    Cli cli("demo", "a test demo");
    int64_t& shift = cli.flag("shift", 0, "a signed number");
    double& scale = cli.flag("scale", 1.0, "a float");
    CHECK(cli.parse_args({"--shift", "-3", "--scale", "-2.5e-1", "--shift=7"}) == Cli::Outcome::Run);
    CHECK(shift == 7);
    CHECK(scale == -0.25);
    CHECK(cli.parse_args({"--shift", "1", "--help", "--bogus"}) == Cli::Outcome::Help);
    CHECK(cli.parse_args({"-h"}) == Cli::Outcome::Help);
}

TEST_CASE("cli: errors name the flag and the value") {
    Cli cli("demo", "a test demo");
    cli.flag("epochs", 20, "training epochs");
    cli.flag("lr", 1e-3, "learning rate");
    cli.flag("quick", false, "fast run");
    cli.flag("device", "cpu", "device", {"cpu", "cuda"});

    CHECK(cli_error(cli, {"--epoch", "3"}) == "unknown flag --epoch (did you mean --epochs?)");
    CHECK(cli_error(cli, {"--zzzzzz"}) == "unknown flag --zzzzzz");
    CHECK(cli_error(cli, {"--epochs", "abc"}) == "--epochs expects an integer, got 'abc'");
    CHECK(cli_error(cli, {"--epochs=2.5"}) == "--epochs expects an integer, got '2.5'");
    CHECK(cli_error(cli, {"--epochs=99999999999999999999"}) ==
          "--epochs expects an integer, got '99999999999999999999' (out of range)");
    CHECK(cli_error(cli, {"--lr", "fast"}) == "--lr expects a number, got 'fast'");
    CHECK(cli_error(cli, {"--lr=nan"}) == "--lr expects a number, got 'nan'");
    CHECK(cli_error(cli, {"--device", "tpu"}) == "--device must be one of cpu, cuda; got 'tpu'");
    CHECK(cli_error(cli, {"--quick=maybe"}) ==
          "--quick is a switch: give it alone, or as --quick=true / --quick=false; got 'maybe'");
    CHECK(cli_error(cli, {"--epochs"}) == "--epochs needs a value");
    CHECK(cli_error(cli, {"--epochs", "--quick"}) == "--epochs needs a value");
    CHECK(cli_error(cli, {"epochs"}) == "unexpected argument 'epochs' (flags start with --)");
    CHECK(cli_error(cli, {"--epochs="}) == "--epochs expects an integer, got ''");

    CHECK_THROWS_AS(cli.flag("epochs", 1, "again"), std::logic_error);
    CHECK_THROWS_AS(cli.flag("mode", "a", "bad default", {"b", "c"}), std::logic_error);
    CHECK_THROWS_AS(cli.given("epoch"), std::logic_error);
}

TEST_CASE("cli: usage lists every flag with its default") {
    Cli cli("01_demo", "Four experts learn to split a task.");
    cli.flag("epochs", 20, "training epochs");
    cli.flag("device", "cpu", "where tensors live", {"cpu", "cuda"});
    cli.flag("quick", false, "a fast run");
    cli.example("./build/demos/01_demo --quick", "a smoke run");
    std::string u = cli.usage();
    CHECK(u.find("01_demo: Four experts learn to split a task.") == 0);
    CHECK(u.find("--epochs N") != std::string::npos);
    CHECK(u.find("training epochs (default: 20)") != std::string::npos);
    CHECK(u.find("--device cpu|cuda") != std::string::npos);
    CHECK(u.find("--quick") != std::string::npos);
    CHECK(u.find("--help") != std::string::npos);
    CHECK(u.find("./build/demos/01_demo --quick") != std::string::npos);
}

TEST_CASE("cli: standard flags, their checks, and the config as JSON") {
    Cli cli("01_demo", "d");
    StandardFlags flags = add_standard_flags(cli, 7);
    CHECK(flags.out == "runs/01_demo");
    CHECK(flags.seed == 7);
    CHECK(flags.device == "cpu");
    CHECK(cli.parse_args({"--seed", "3", "--quick", "--out", "/tmp/x"}) == Cli::Outcome::Run);
    CHECK(flags.seed == 3);
    CHECK(flags.quick);
    CHECK(flags.out == "/tmp/x");
    CHECK(cli_error(cli, {"--evaluate"}) == "--evaluate needs a checkpoint to evaluate: add --load FILE");
    CHECK(cli_error(cli, {"--evaluate", "--load", "a.safetensors", "--threads=-1"}) == "--threads must be >= 0, got -1");
    CHECK(apply_standard_flags(flags) >= 1);

    Json config = cli.to_json();
    CHECK(config.find("seed")->as_int() == 3);
    CHECK(config.find("device")->as_string() == "cpu");
    CHECK(config.find("quick")->as_bool());
}

TEST_CASE("cli: --device becomes an mg::Device, or a clear error when CUDA is not usable") {
    Cli cli("01_demo", "d");
    StandardFlags flags = add_standard_flags(cli);
    REQUIRE(cli.parse_args({}) == Cli::Outcome::Run);
    CHECK(selected_device(flags) == mg::Device::CPU);
    REQUIRE(cli.parse_args({"--device", "cuda"}) == Cli::Outcome::Run);
    if (mg::device_available(mg::Device::CUDA)) {
        CHECK(selected_device(flags) == mg::Device::CUDA);
    } else {
        // The reason the engine gives ("built without CUDA", "no CUDA device found", ...), after
        // the flag, so that a learner sees at once what was asked and why it cannot be had.
        const std::string why = mg::cuda_unavailable_reason();
        REQUIRE(!why.empty());
        CHECK_THROWS_WITH_AS(selected_device(flags), ("--device cuda: " + why).c_str(), std::runtime_error);
    }
    flags.device = "tpu";  // parse() refuses it; set by hand, the function names the value
    CHECK_THROWS_WITH_AS(selected_device(flags), "--device must be cpu or cuda, got 'tpu'", std::invalid_argument);
}

TEST_CASE("cli: command line quoting") {
    const char* argv[] = {"./build/demos/01_demo", "--out", "my runs/a", "--name=it's"};
    CHECK(command_line(4, argv) == "./build/demos/01_demo --out 'my runs/a' '--name=it'\\''s'");
    CHECK(shell_quote("") == "''");
    CHECK(edit_distance("epoch", "epochs") == 1);
    CHECK(edit_distance("kitten", "sitting") == 3);
}

TEST_CASE("report json: values, nesting, precision and escaping") {
    Json m = Json::object();
    m["accuracy"] = 0.9312;
    m["seed"] = 42;
    m["device"] = "cpu";
    m["quick"] = true;
    m["nothing"] = nullptr;
    m["utilization"] = Json::array({std::vector<double>{0.25, 0.5}, std::vector<double>{0.1, 0.9}});
    m["config"]["epochs"] = int64_t(20);
    m["config"]["lr"] = 1e-3;
    m["text"] = std::string("say \"hi\"\\\n\ttab\x01");
    m["nan"] = std::nan("");
    m["big"] = 1e300;
    m["third"] = 1.0 / 3.0;
    m["empty_list"] = Json::array();
    m["empty_object"] = Json::object();

    CHECK(m.dump(0) ==
          "{\"accuracy\": 0.9312, \"seed\": 42, \"device\": \"cpu\", \"quick\": true, \"nothing\": null, "
          "\"utilization\": [[0.25, 0.5], [0.1, 0.9]], \"config\": {\"epochs\": 20, \"lr\": 0.001}, "
          "\"text\": \"say \\\"hi\\\"\\\\\\n\\ttab\\u0001\", \"nan\": null, \"big\": 1e+300, "
          "\"third\": 0.3333333333333333, \"empty_list\": [], \"empty_object\": {}}");
    CHECK(m.size() == 13);
    CHECK(m.find("config")->find("epochs")->as_int() == 20);
    CHECK(m.find("missing") == nullptr);
    CHECK(m.find("utilization")->at(1).at(1).as_number() == 0.9);
    CHECK_THROWS_AS(m.find("seed")->as_string(), std::logic_error);
    CHECK_THROWS_AS(m["seed"]["x"], std::logic_error);
    // Shortest round trip: every double reads back exactly.
    for (double v : {0.1, 1.0 / 3.0, 2.5e-8, 123456789.125, -0.0})
        CHECK(std::stod(json_number(v)) == v);
}

TEST_CASE("report json: pretty printing keeps arrays of numbers on one line") {
    Json m = Json::object();
    m["utilization"] = std::vector<double>{0.25, 0.75};
    m["layers"] = Json::array({Json::object({{"name", "moe0"}, {"experts", 4}})});
    CHECK(m.dump(2) ==
          "{\n"
          "  \"utilization\": [0.25, 0.75],\n"
          "  \"layers\": [\n"
          "    {\n"
          "      \"name\": \"moe0\",\n"
          "      \"experts\": 4\n"
          "    }\n"
          "  ]\n"
          "}");
}

TEST_CASE("report json: write_json creates folders and names the path on failure") {
    std::string dir = temp_dir("json");
    Json m = Json::object({{"accuracy", 0.5}});
    write_json(dir + "/a/b/metrics.json", m);
    CHECK(read_file(dir + "/a/b/metrics.json") == "{\n  \"accuracy\": 0.5\n}\n");
    // A file where a folder should be: the error names the path.
    std::ofstream(dir + "/file") << "x";
    try {
        write_json(dir + "/file/metrics.json", m);
        FAIL("expected an error");
    } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()).find(dir + "/file") != std::string::npos);
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("report: markdown with headings, tables, images and code") {
    Report r("Level 1: four experts");
    r.paragraph("Some *text*.");
    r.heading("Results");
    r.table({"model", "accuracy", "params", "note"},
            {{"MoE", 0.93125, int64_t(12345), Cell::percent(0.5)},
             {"linear | baseline", Cell::fixed(0.5, 2), 63, "a"}});
    r.image("utilization.png", "utilization per expert");
    r.bullets({"one", "two"});
    r.code("./demo --quick", "sh");
    std::string md = r.markdown();
    CHECK(md ==
          "# Level 1: four experts\n"
          "\nSome *text*.\n"
          "\n## Results\n"
          "\n| model | accuracy | params | note |\n"
          "|---|---|---|---|\n"
          "| MoE | 0.9313 | 12,345 | 50.0% |\n"
          "| linear \\| baseline | 0.50 | 63 | a |\n"
          "\n![utilization per expert](utilization.png)\n"
          "\n- one\n- two\n"
          "\n```sh\n./demo --quick\n```\n");
    CHECK_THROWS_AS(r.table({"a", "b"}, {{"only one"}}), std::invalid_argument);

    std::string dir = temp_dir("report");
    r.write(dir + "/run/report.md");
    CHECK(read_file(dir + "/run/report.md") == md);
    CHECK_FALSE(std::filesystem::exists(dir + "/run/report.md.tmp"));
    std::filesystem::remove_all(dir);
}

TEST_CASE("report: number formatting and run info") {
    CHECK(format_number(0.93125) == "0.9313");
    CHECK(format_number(12.3456) == "12.35");
    CHECK(format_number(41234.4) == "41,234");
    CHECK(format_number(1234567.0) == "1,234,567");
    CHECK(format_number(0.0001234) == "0.0001234");
    CHECK(format_number(1.234e-7) == "1.2e-07");
    CHECK(format_number(0) == "0");
    CHECK(format_number(-2.5) == "-2.5");
    CHECK(format_number(std::nan("")) == "nan");
    CHECK(format_integer(-1234567) == "-1,234,567");
    CHECK(format_integer(999) == "999");

    std::string rev = git_revision();
    CHECK_FALSE(rev.empty());
    CHECK(utc_timestamp().size() == 20);

    Cli cli("01_demo", "d");
    StandardFlags flags = add_standard_flags(cli);
    cli.flag("epochs", 3, "epochs");
    const char* argv[] = {"01_demo", "--seed", "5"};
    cli.parse(3, argv);
    Json info = run_info(cli, flags);
    CHECK(info.find("seed")->as_int() == 5);
    CHECK(info.find("device")->as_string() == "cpu");
    CHECK(info.find("threads")->as_int() >= 1);
    CHECK(info.find("git_revision")->as_string() == rev);
    CHECK(info.find("command")->as_string() == "01_demo --seed 5");
    CHECK(info.find("config")->find("epochs")->as_int() == 3);
}

TEST_CASE("report progress: plain lines every 10% when not on a terminal") {
    std::ostringstream out;
    double t = 100.0;
    Progress bar(200, "train", {.out = &out, .interactive = 0, .clock = [&] { return t; }});
    for (int64_t step = 1; step <= 200; ++step) {
        t += 0.0625;  // 100 samples per 1/16 s = 1600 samples/s (exact in binary)
        bar.update(step, {{"loss", 1.0 / step}, {"acc", 0.5}}, 100);
    }
    bar.finish();
    std::string text = out.str();
    std::vector<std::string> lines;
    std::istringstream is(text);
    for (std::string l; std::getline(is, l);) lines.push_back(l);
    REQUIRE(lines.size() == 10);  // 10%, 20%, ..., 100%; finish() adds nothing new
    CHECK(lines[0] == "train  20/200  10% | loss 0.0500 acc 0.5000 | 1600 samples/s | 0:01<0:11");
    CHECK(lines[9] == "train 200/200 100% | loss 0.0050 acc 0.5000 | 1600 samples/s | 0:13");
    CHECK(text.find('\r') == std::string::npos);
    CHECK(bar.samples() == 20000);
    CHECK(bar.samples_per_second() == doctest::Approx(1600.0));
}

TEST_CASE("report progress: redraws in place on a terminal, at most every 0.1 s") {
    std::ostringstream out;
    double t = 0.0;
    Progress bar(100, "train", {.out = &out, .interactive = 1, .bar_width = 10, .clock = [&] { return t; }});
    for (int64_t step = 1; step <= 100; ++step) {
        t += 0.03125;  // 1/32 s per step: a redraw every 4th step (0.125 s >= 0.1 s)
        bar.update(step, {{"loss", 0.5}}, 10);
    }
    bar.note("eval: accuracy 0.9");
    bar.finish({{"loss", 0.25}});
    std::string text = out.str();
    size_t redraws = std::count(text.begin(), text.end(), '\r');
    CHECK(redraws >= 26);  // steps 1, 5, ..., 97 and 100, the note, and the final line
    CHECK(redraws <= 32);
    CHECK(text.find("\rtrain [####......]  49/100  49% | loss 0.5000 | 320 samples/s | 0:02<0:02") !=
          std::string::npos);
    CHECK(text.find("  50/100") == std::string::npos);
    CHECK(text.find("eval: accuracy 0.9\n") != std::string::npos);
    // The last line: full bar, final metrics, newline.
    CHECK(text.substr(text.rfind('\r')) == "\rtrain [##########] 100/100 100% | loss 0.2500 | 320 samples/s | 0:03\n");
}

TEST_CASE("report progress: a bar that never ran prints nothing") {
    std::ostringstream out;
    {
        Progress bar(0, "train", {.out = &out, .interactive = 0});
        bar.finish();
    }
    CHECK(out.str().empty());
}

TEST_CASE("report progress: durations and counts") {
    CHECK(format_duration(7.4) == "0:07");
    CHECK(format_duration(723) == "12:03");
    CHECK(format_duration(3723) == "1:02:03");
    CHECK(format_count(950) == "950");
    CHECK(format_count(41234) == "41.2k");
    CHECK(format_count(3.2e6) == "3.2M");
}

TEST_CASE("report helpers: median, numbered labels") {
    CHECK(median({3, 1, 2}) == 2);
    CHECK(median({4, 1, 3, 2}) == 2.5);
    CHECK(std::isnan(median({})));
    CHECK(numbered("expert ", 3) == std::vector<std::string>{"expert 0", "expert 1", "expert 2"});
    CHECK(numbered("e", 0).empty());
}
