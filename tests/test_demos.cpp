// Smoke tests of the demos: every demos/NN_name/ folder's binary runs with --quick, must exit 0
// (each demo checks its own quality bars and exits non-zero when it misses them), and must
// write metrics.json, report.md and at least one PNG into its output folder.
//
// `make test` sets MOEGRAD_BUILD to the build folder. Under `make sanitize` (MOEGRAD_SMOKE=1)
// the demos also get --smoke: a few steps only, no quality bars, because the point there is
// memory errors, and sanitized code is slow.
#include <doctest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {
std::vector<std::string> demo_names() {
    std::vector<std::string> names;
    if (!fs::exists("demos")) return names;
    for (const auto& entry : fs::directory_iterator("demos")) {
        std::string name = entry.path().filename().string();
        if (entry.is_directory() && name.size() > 3 && isdigit(name[0]) && isdigit(name[1]) && name[2] == '_' &&
            fs::exists(entry.path() / "main.cpp"))
            names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
}
}  // namespace

TEST_CASE("demos: every level's --quick run passes its own checks and writes its report") {
    const char* build_env = std::getenv("MOEGRAD_BUILD");
    const std::string build = build_env ? build_env : "build";
    const bool smoke = std::getenv("MOEGRAD_SMOKE") != nullptr;
    const std::vector<std::string> names = demo_names();
    if (names.empty()) {
        MESSAGE("no demos/NN_name folders found from " << fs::current_path() << " (run from the repo root)");
        return;
    }
    for (const std::string& name : names) {
        CAPTURE(name);
        const fs::path binary = fs::path(build) / "demos" / name;
        REQUIRE_MESSAGE(fs::exists(binary), "demo binary missing: " << binary << " (run make first)");
        const fs::path out = fs::temp_directory_path() / ("moegrad_smoke_" + name);
        fs::remove_all(out);
        std::string command = binary.string() + " --quick --out " + out.string() + (smoke ? " --smoke" : "") +
                              " > " + out.string() + ".log 2>&1";
        MESSAGE("running: " << command);
        int status = std::system(command.c_str());
        if (status != 0) {
            std::string tail = "tail -n 30 " + out.string() + ".log";
            std::system(tail.c_str());
        }
        CHECK_MESSAGE(status == 0, "demo exited with status " << status << "; log: " << out.string() << ".log");
        CHECK(fs::exists(out / "metrics.json"));
        CHECK(fs::exists(out / "report.md"));
        int pngs = 0;
        if (fs::exists(out))
            for (const auto& entry : fs::directory_iterator(out)) pngs += entry.path().extension() == ".png";
        CHECK_MESSAGE(pngs > 0, "no PNG plots written");
    }
}
