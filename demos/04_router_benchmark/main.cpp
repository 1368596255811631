// Demo level 4: the router benchmark. How fast does an MoE layer route and compute, over a grid of
// batch sizes x experts x k x capacity factors, and where does the time go?
//
// For each point of the grid: a fresh layer (router + E experts d_model -> d_ff -> d_model) and
// batch x seq random tokens. Timed, after warm-up runs that are not counted:
//   router  the gate GEMM, softmax, top-k, per-expert counts, the capacity limit and the token
//           permutation that groups slots by expert (what a dispatch needs), forward only;
//   layer   the whole sparse layer forward (router, dispatch, experts, combine), no graph;
//           with --backward also forward + backward.
// And two yardsticks with the same expert FLOPs, to see what dispatch and combine cost:
//   groups  only the experts' GEMMs, on exactly the group sizes the router produced;
//   one     the same FLOPs as one GEMM pair on all kept slots at once (the best case: no
//           routing at all, one big matrix).
// It reports tokens/s, GFLOP/s, the layer's share of the GEMM speed, utilization statistics
// (min, max, variance, dropped fraction) and, where groups are small, the GB/s of expert weights
// read against the machine's memory bandwidth (measured here with a copy).
//
// The run checks that what it timed is right (the sparse layer equals its dense reference, no
// expert holds more than its capacity, dropping never grows with the capacity factor), never its
// speed: speed targets live in bench/RESULTS.md.
//
//   ./build/demos/04_router_benchmark --quick       (a small grid, well under a minute)
//   ./build/demos/04_router_benchmark               (the full grid of the benchmarking write-up)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "demos/common/cli.h"
#include "demos/common/json.h"
#include "demos/common/plot.h"
#include "demos/common/report.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/metrics.h"
#include "nn/moe.h"

using namespace mg;
using namespace mg::demo;

namespace {

// ---- flags that hold lists: "1,4,8" ---------------------------------------------------------------
template <typename T> std::vector<T> parse_list(const std::string& flag, const std::string& text) {
    std::vector<T> values;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        std::istringstream one(item);
        T v;
        char extra;
        if (!(one >> v) || (one >> extra) || v <= 0)
            throw CliError("--" + flag + " '" + text + "': expected a comma-separated list of positive numbers");
        values.push_back(v);
    }
    if (values.empty()) throw CliError("--" + flag + ": the list is empty");
    return values;
}

struct Timing {
    double mean = 0, median = 0;  // seconds per call
};

// `warmup` calls that are not counted, then `reps` timed calls. On a GPU a call only queues its
// kernels, so the clock is read after waiting for `device` to finish them.
Timing time_calls(const std::function<void()>& fn, int warmup, int reps, Device device) {
    for (int i = 0; i < warmup; ++i) fn();
    wait_for_device(device);
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
        const double t0 = seconds_now();
        fn();
        wait_for_device(device);
        t.push_back(seconds_now() - t0);
    }
    Timing r;
    for (double s : t) r.mean += s / (double)t.size();
    r.median = median(t);
    return r;
}

// The memory bandwidth of `device` as this program sees it: copy n floats (a buffer much bigger
// than the caches), count bytes read + written, best of a few runs. On the CPU a plain loop; on a
// GPU the engine's copy kernel (Tensor::copy_), timed up to the end of the work on the device.
double copy_bandwidth_gbs(size_t n, Device device) {
    double best = 0;
    if (device == Device::CPU) {
        std::vector<float> a(n, 1.0f), b(n, 0.0f);
        for (int rep = 0; rep < 3; ++rep) {
            const double t0 = seconds_now();
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n; ++i) b[i] = a[i];
            best = std::max(best, 2.0 * n * sizeof(float) / (seconds_now() - t0) / 1e9);
        }
        return best;
    }
    Tensor a = Tensor::ones({(int64_t)n}, DType::Float32, device), b = Tensor::zeros({(int64_t)n}, DType::Float32, device);
    wait_for_device(device);
    for (int rep = 0; rep < 3; ++rep) {
        const double t0 = seconds_now();
        b.copy_(a);
        wait_for_device(device);
        best = std::max(best, 2.0 * n * sizeof(float) / (seconds_now() - t0) / 1e9);
    }
    return best;
}

// ---- one grid point ---------------------------------------------------------------------------------
struct Point {
    int64_t batch, experts, k;
    double cf;  // 0 = dropless
};

std::string cf_name(double cf) { return cf == 0 ? "dropless" : format_number(cf); }

struct Result {
    Point p;
    int64_t tokens = 0;
    Timing router, layer, backward, groups, one;
    double expert_flops = 0;          // 2 * multiply-adds of the experts' GEMMs on the kept slots
    double router_flops = 0;          // the gate GEMM
    std::vector<int64_t> counts;      // kept slots per expert
    std::vector<int64_t> chosen;      // slots the router chose per expert, before the capacity limit
    std::vector<double> utilization;  // kept slots per expert / all kept slots
    double util_min = 0, util_max = 0, util_var = 0, dropped_fraction = 0;
    int64_t min_group = 0, capacity = 0, busy_experts = 0;
    double weight_gbs = 0;            // expert weights read per second by the layer
};

struct Sizes {
    int64_t seq, d_model, d_ff;
    int warmup, reps;
    bool backward;
    uint64_t seed;
    Device device;  // where the layer and the tokens live
};

Result run_point(const Point& p, const Sizes& z) {
    Result r;
    r.p = p;
    r.tokens = p.batch * z.seq;
    Generator gen(z.seed);
    nn::SpecializedExpertNetwork moe(nn::MoEConfig{.d_in = z.d_model,
                                                   .hidden = {z.d_ff},
                                                   .d_out = z.d_model,
                                                   .experts = p.experts,
                                                   .k = p.k,
                                                   .balance_alpha = 0.01,
                                                   .capacity_factor = p.cf},
                                     gen);
    moe.to(z.device);
    const Tensor x = randn({r.tokens, z.d_model}, gen, DType::Float32, z.device);

    // The routing every timed call repeats (the router is deterministic in eval: no noise, no jitter).
    moe.eval();
    std::optional<NoGradGuard> no_grad(std::in_place);  // forward-only timings record no graph
    const nn::Routing routing = moe.router->forward(x);
    r.counts = routing.expert_counts;
    r.chosen = routing.chosen_counts;
    r.capacity = routing.capacity;
    r.dropped_fraction = routing.dropped_fraction();
    int64_t kept = 0;
    for (int64_t c : routing.expert_counts) kept += c;
    r.min_group = *std::min_element(routing.expert_counts.begin(), routing.expert_counts.end());
    for (int64_t c : routing.expert_counts) {
        r.utilization.push_back(kept > 0 ? (double)c / (double)kept : 0.0);
        r.busy_experts += c > 0;
    }
    r.util_min = *std::min_element(r.utilization.begin(), r.utilization.end());
    r.util_max = *std::max_element(r.utilization.begin(), r.utilization.end());
    r.util_var = nn::metrics::population_variance(r.utilization);
    r.expert_flops = 2.0 * (double)kept * 2.0 * (double)z.d_model * (double)z.d_ff;
    r.router_flops = 2.0 * (double)r.tokens * (double)z.d_model * (double)p.experts;

    // router: routing + the permutation that groups the slots by expert.
    r.router = time_calls(
        [&] {
            nn::Routing rr = moe.router->forward(x);
            Tensor order = argsort(rr.indices.reshape({-1}), 0);
        },
        z.warmup, z.reps, z.device);
    // layer: the whole forward.
    r.layer = time_calls([&] { Tensor y = moe(x).y; }, z.warmup, z.reps, z.device);

    // groups: the experts' GEMM pairs on their own group sizes, nothing else.
    const Tensor w1 = moe.experts[0]->weights[0], w2 = moe.experts[0]->weights[1];
    std::vector<Tensor> group_inputs;
    for (int64_t e = 0; e < p.experts; ++e)
        if (routing.expert_counts[e] > 0) group_inputs.push_back(randn({routing.expert_counts[e], z.d_model}, gen, DType::Float32, z.device));
    r.groups = time_calls(
        [&] {
            for (size_t e = 0; e < group_inputs.size(); ++e) {
                const auto& ex = *moe.experts[e];
                Tensor h = matmul(group_inputs[e], ex.weights[0].t());
                Tensor y = matmul(h, ex.weights[1].t());
            }
        },
        z.warmup, z.reps, z.device);
    // one: the same FLOPs as one GEMM pair on all kept slots.
    const Tensor all_slots = randn({std::max<int64_t>(kept, 1), z.d_model}, gen, DType::Float32, z.device);
    r.one = time_calls(
        [&] {
            Tensor h = matmul(all_slots, w1.t());
            Tensor y = matmul(h, w2.t());
        },
        z.warmup, z.reps, z.device);

    no_grad.reset();
    if (z.backward) {  // with a graph, in training mode
        moe.train();
        const Tensor probe = randn({r.tokens, z.d_model}, gen, DType::Float32, z.device);
        r.backward = time_calls(
            [&] {
                auto out = moe(x);
                (sum(out.y * probe) + out.aux_loss).backward();
                moe.zero_grad();
            },
            z.warmup, z.reps, z.device);
        moe.eval();
    }
    // Each busy expert's two weight matrices are read once per forward.
    r.weight_gbs = (double)r.busy_experts * 2.0 * (double)z.d_model * (double)z.d_ff * 4.0 / r.layer.median / 1e9;
    return r;
}

// The sparse layer equals its dense reference (every expert on every token, masked by the gates):
// the numbers timed above are the numbers of a correct layer.
bool matches_dense_reference(const Sizes& z, int64_t experts, int64_t k, double cf, std::string* detail) {
    Generator gen(z.seed + 1);
    nn::SpecializedExpertNetwork moe(
        nn::MoEConfig{.d_in = 64, .hidden = {128}, .d_out = 64, .experts = experts, .k = k, .capacity_factor = cf},
        gen);
    moe.to(z.device);
    moe.eval();
    NoGradGuard no_grad;
    const Tensor x = randn({256, 64}, gen, DType::Float32, z.device);
    const double diff = max(abs(moe(x).y - moe.forward_dense_reference(x))).item();
    *detail = format_number(diff);
    return diff < 1e-4;
}

}  // namespace

int run(int argc, char** argv) {
    // ---- flags --------------------------------------------------------------------------------------
    Cli cli("04_router_benchmark", "Level 4: MoE routing and layer throughput over batch x experts x k x capacity.");
    StandardFlags flags = add_standard_flags(cli);
    std::string& batches_flag = cli.flag("batches", "1,4,8", "batch sizes (sequences of --seq tokens)");
    std::string& experts_flag = cli.flag("experts", "8,16,32", "experts per layer");
    std::string& ks_flag = cli.flag("ks", "1,2,4", "experts per token (top-k)");
    std::string& cfs_flag = cli.flag("cfs", "1.0,1.5,2.0", "capacity factors (capacity = ceil(k * tokens * cf / E))");
    bool& dropless = cli.flag("dropless", false, "add a dropless point (no capacity limit) to every (batch, E, k)");
    int64_t& seq = cli.flag("seq", 1024, "tokens per sequence");
    int64_t& d_model = cli.flag("d-model", 512, "model width (expert input and output)");
    int64_t& d_ff = cli.flag("d-ff", 2048, "expert hidden width");
    int64_t& warmup = cli.flag("warmup", 1, "untimed warm-up calls per measurement");
    int64_t& reps = cli.flag("reps", 3, "timed calls per measurement (mean and median)");
    bool& backward = cli.flag("backward", false, "also time forward + backward of the layer");
    bool& smoke = cli.flag("smoke", false, "one tiny point, no checks (sanitizer runs)");
    cli.example("./build/demos/04_router_benchmark --quick", "a small grid (d_model 128), a few seconds on 2 cores");
    cli.example("./build/demos/04_router_benchmark --batches 8 --experts 8 --ks 2 --cfs 1.25 --reps 9",
                "one point, measured carefully");
    cli.parse(argc, argv);
    const int threads = apply_standard_flags(flags);
    const Device device = selected_device(flags);  // --device cuda stops here with the reason when no GPU is usable
    if (!flags.save.empty() || !flags.load.empty())
        throw std::runtime_error("--save / --load: the benchmark trains nothing, so there is no checkpoint");
    // --quick and --smoke shrink only what the user did not set.
    auto shrink = [&](const char* name, std::string& flag, const char* value) {
        if (!cli.given(name)) flag = value;
    };
    if (flags.quick || smoke) {
        shrink("batches", batches_flag, smoke ? "1" : "1,4");
        shrink("experts", experts_flag, smoke ? "4" : "4,8");
        shrink("ks", ks_flag, smoke ? "2" : "1,2");
        shrink("cfs", cfs_flag, smoke ? "1.0" : "1.0,2.0");
        if (!cli.given("seq")) seq = smoke ? 64 : 256;
        if (!cli.given("d-model")) d_model = smoke ? 32 : 128;
        if (!cli.given("d-ff")) d_ff = smoke ? 64 : 512;
        if (!cli.given("reps")) reps = smoke ? 1 : 2;
    }
    const auto batch_list = parse_list<int64_t>("batches", batches_flag);
    const auto expert_list = parse_list<int64_t>("experts", experts_flag);
    const auto k_list = parse_list<int64_t>("ks", ks_flag);
    auto cf_list = parse_list<double>("cfs", cfs_flag);
    if (dropless) cf_list.push_back(0.0);
    for (int64_t k : k_list)
        for (int64_t e : expert_list)
            if (k > e) throw CliError("--ks " + ks_flag + " and --experts " + experts_flag + ": k = " + std::to_string(k) +
                                      " is more than E = " + std::to_string(e));
    const Sizes z{seq, d_model, d_ff, (int)warmup, (int)reps, backward, (uint64_t)flags.seed, device};

    // ---- the grid -------------------------------------------------------------------------------------
    std::printf("grid: batches %s x experts %s x k %s x cf %s%s; seq %lld, d_model %lld, d_ff %lld; %d threads\n",
                batches_flag.c_str(), experts_flag.c_str(), ks_flag.c_str(), cfs_flag.c_str(), dropless ? " + dropless" : "",
                (long long)seq, (long long)d_model, (long long)d_ff, threads);
    std::printf("%5s %3s %2s %8s | %9s %9s | %9s %9s %7s | %6s %6s | %6s %6s %8s %7s\n", "batch", "E", "k", "cf",
                "router ms", "Mtok/s", "layer ms", "tok/s", "GFLOP/s", "xgroup", "xone", "min u", "max u", "var", "dropped");
    std::vector<Result> results;
    for (int64_t b : batch_list)
        for (int64_t e : expert_list)
            for (int64_t k : k_list)
                for (double cf : cf_list) {
                    Result r = run_point({b, e, k, cf}, z);
                    std::printf("%5lld %3lld %2lld %8s | %9.3f %9.2f | %9.2f %9.0f %7.1f | %6.2f %6.2f | %6.3f %6.3f %8.5f %6.2f%%\n",
                                (long long)b, (long long)e, (long long)k, cf_name(cf).c_str(), r.router.median * 1e3,
                                r.tokens / r.router.median / 1e6, r.layer.median * 1e3, r.tokens / r.layer.median,
                                r.expert_flops / r.layer.median / 1e9, r.layer.median / r.groups.median,
                                r.layer.median / r.one.median, r.util_min, r.util_max, r.util_var,
                                100 * r.dropped_fraction);
                    std::fflush(stdout);
                    results.push_back(std::move(r));
                }
    // 256 MiB each way (64 MiB with --quick, still twice the L3 cache of a laptop or this machine).
    const double bandwidth = copy_bandwidth_gbs(smoke ? size_t(1) << 20 : flags.quick ? size_t(16) << 20 : size_t(64) << 20, device);
    if (device == Device::CPU) std::printf("memory bandwidth (copy, %d threads): %.1f GB/s\n", threads, bandwidth);
    else std::printf("memory bandwidth (copy on the %s): %.1f GB/s\n", device_name(device), bandwidth);

    // ---- checks: correctness of what was timed, never speed ---------------------------------------------
    std::vector<std::pair<std::string, bool>> checks;
    if (!smoke) {
        for (double cf : {0.0, 1.0}) {
            std::string detail;
            const bool ok = matches_dense_reference(z, 8, 2, cf, &detail);
            checks.push_back({"sparse layer equals its dense reference (E 8, k 2, cf " + cf_name(cf) + "): max |diff| " + detail, ok});
        }
        bool within_capacity = true, monotone = true;
        for (size_t i = 0; i < results.size(); ++i) {
            const Result& r = results[i];
            for (int64_t c : r.counts)
                if (r.capacity > 0 && c > r.capacity) within_capacity = false;
            for (size_t j = 0; j < results.size(); ++j) {
                const Result& s = results[j];
                const bool same = s.p.batch == r.p.batch && s.p.experts == r.p.experts && s.p.k == r.p.k;
                const double cf_r = r.p.cf == 0 ? 1e9 : r.p.cf, cf_s = s.p.cf == 0 ? 1e9 : s.p.cf;
                if (same && cf_s > cf_r && s.dropped_fraction > r.dropped_fraction) monotone = false;
            }
            if (r.p.cf == 0 && r.dropped_fraction != 0) monotone = false;
        }
        checks.push_back({"no expert holds more slots than its capacity", within_capacity});
        checks.push_back({"dropped fraction never grows with the capacity factor (0 when dropless)", monotone});
    }
    bool all_ok = true;
    for (auto& [what, ok] : checks) {
        std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
        all_ok = all_ok && ok;
    }

    // ---- CSV, metrics.json ----------------------------------------------------------------------------
    ensure_directory(flags.out);
    const std::string out = flags.out + "/";
    std::string csv =
        "batch,experts,k,capacity_factor,tokens,router_mean_ms,router_median_ms,router_tokens_per_s,layer_mean_ms,"
        "layer_median_ms,layer_tokens_per_s,layer_gflops,groups_gemm_gflops,one_gemm_gflops,layer_vs_groups,"
        "layer_vs_one,backward_median_ms,util_min,util_max,util_variance,dropped_fraction,capacity,min_group,"
        "weight_gb_per_s\n";
    Json rows = Json::array();
    for (const Result& r : results) {
        char line[1024];
        std::snprintf(line, sizeof line,
                      "%lld,%lld,%lld,%g,%lld,%.4f,%.4f,%.0f,%.4f,%.4f,%.0f,%.2f,%.2f,%.2f,%.4f,%.4f,%.4f,%.5f,%.5f,%.7f,%.5f,%lld,%lld,%.2f\n",
                      (long long)r.p.batch, (long long)r.p.experts, (long long)r.p.k, r.p.cf, (long long)r.tokens,
                      r.router.mean * 1e3, r.router.median * 1e3, r.tokens / r.router.median, r.layer.mean * 1e3,
                      r.layer.median * 1e3, r.tokens / r.layer.median, r.expert_flops / r.layer.median / 1e9,
                      r.expert_flops / r.groups.median / 1e9, r.expert_flops / r.one.median / 1e9,
                      r.layer.median / r.groups.median, r.layer.median / r.one.median, r.backward.median * 1e3,
                      r.util_min, r.util_max, r.util_var, r.dropped_fraction, (long long)r.capacity,
                      (long long)r.min_group, r.weight_gbs);
        csv += line;
        rows.push_back(Json::object({{"batch", r.p.batch},
                                     {"experts", r.p.experts},
                                     {"k", r.p.k},
                                     {"capacity_factor", r.p.cf},
                                     {"tokens", r.tokens},
                                     {"router_median_seconds", r.router.median},
                                     {"router_tokens_per_second", r.tokens / r.router.median},
                                     {"layer_median_seconds", r.layer.median},
                                     {"layer_mean_seconds", r.layer.mean},
                                     {"layer_tokens_per_second", r.tokens / r.layer.median},
                                     {"layer_gflops", r.expert_flops / r.layer.median / 1e9},
                                     {"layer_vs_groups_gemm", r.layer.median / r.groups.median},
                                     {"layer_vs_one_gemm", r.layer.median / r.one.median},
                                     {"backward_median_seconds", r.backward.median},
                                     {"utilization", r.utilization},
                                     {"balance_variance", r.util_var},
                                     {"dropped_fraction", r.dropped_fraction},
                                     {"weight_gb_per_second", r.weight_gbs}}));
    }
    write_text_file(out + "results.csv", csv);
    Json metrics = run_info(cli, flags);
    metrics["points"] = rows;
    metrics["memory_bandwidth_gb_per_second"] = bandwidth;
    Json checks_json = Json::array();
    for (auto& [what, ok] : checks) checks_json.push_back(Json::object({{"check", what}, {"passed", ok}}));
    metrics["checks"] = checks_json;
    metrics["passed"] = all_ok;
    write_json(out + "metrics.json", metrics);

    // ---- plots ------------------------------------------------------------------------------------------
    // One per (k, cf): the slots the router chose for each expert relative to its fair share
    // (1 = T*k/E slots), experts sorted from the busiest, one line per E at the largest batch. The
    // capacity is the line at cf: whatever lies above it was dropped.
    const int64_t big_batch = batch_list.back();
    std::vector<std::string> utilization_pngs;
    for (int64_t k : k_list)
        for (double cf : cf_list) {
            std::vector<plot::Series> series;
            for (const Result& r : results) {
                if (r.p.batch != big_batch || r.p.k != k || r.p.cf != cf) continue;
                std::vector<double> load;
                for (int64_t c : r.chosen) load.push_back((double)c * (double)r.p.experts / (double)(r.tokens * r.p.k));
                std::sort(load.rbegin(), load.rend());
                std::vector<double> rank;
                for (size_t i = 0; i < load.size(); ++i) rank.push_back((double)(i + 1) / (double)load.size());
                series.push_back({"E = " + std::to_string(r.p.experts), rank, load});
            }
            if (cf > 0) series.push_back({"capacity (cf " + cf_name(cf) + ")", {0.0, 1.0}, {cf, cf}});
            const std::string name = "expert_utilization_k" + std::to_string(k) + "_cf" + cf_name(cf) + ".png";
            plot::line_chart(out + name,
                             {.title = "Expert load, k = " + std::to_string(k) + ", cf " + cf_name(cf) + ", batch " +
                                       std::to_string(big_batch),
                              .xlabel = "experts, busiest first (fraction of E)",
                              .ylabel = "chosen slots / fair share"},
                             series);
            utilization_pngs.push_back(name);
        }
    // Tokens/s of the layer against E, one line per k (largest batch, first cf).
    std::vector<plot::Series> speed;
    for (int64_t k : k_list) {
        plot::Series s{"k = " + std::to_string(k), {}, {}};
        for (const Result& r : results)
            if (r.p.batch == big_batch && r.p.k == k && r.p.cf == cf_list.front()) {
                s.x.push_back((double)r.p.experts);
                s.y.push_back(r.tokens / r.layer.median);
            }
        speed.push_back(s);
    }
    plot::line_chart(out + "tokens_per_second.png",
                     {.title = "MoE layer forward, batch " + std::to_string(big_batch) + ", cf " + cf_name(cf_list.front()),
                      .xlabel = "experts E",
                      .ylabel = "tokens / s"},
                     speed);

    // ---- report ---------------------------------------------------------------------------------------------
    Report report("Level 4: the router benchmark");
    report.paragraph("Each point: a layer of E experts (" + std::to_string(d_model) + " -> " + std::to_string(d_ff) +
                     " -> " + std::to_string(d_model) + ", ReLU), batch x " + std::to_string(seq) +
                     " random tokens, forward only, no graph; " + std::to_string(reps) + " timed calls after " +
                     std::to_string(warmup) + " warm-up call(s), medians; " +
                     (device == Device::CPU ? std::to_string(threads) + " threads. " : std::string("on the GPU. ")) +
                     "GFLOP/s counts the experts' GEMMs on the kept slots. `x groups` = layer time / the experts' "
                     "GEMMs alone on the same group sizes; `x one` = layer time / one GEMM pair with the same FLOPs.");
    std::vector<std::vector<Cell>> table;
    for (const Result& r : results)
        table.push_back({r.p.batch, r.p.experts, r.p.k, cf_name(r.p.cf), Cell::fixed(r.router.median * 1e3, 3),
                         Cell::fixed(r.tokens / r.router.median / 1e6, 2), Cell::fixed(r.layer.median * 1e3, 2),
                         (int64_t)(r.tokens / r.layer.median), Cell::fixed(r.expert_flops / r.layer.median / 1e9, 1),
                         Cell::fixed(r.layer.median / r.groups.median, 2), Cell::fixed(r.layer.median / r.one.median, 2),
                         Cell::fixed(r.util_min, 3), Cell::fixed(r.util_max, 3), Cell::fixed(r.util_var, 5),
                         Cell::percent(r.dropped_fraction, 2), r.min_group, Cell::fixed(r.weight_gbs, 1)});
    report.table({"batch", "E", "k", "cf", "router ms", "router Mtok/s", "layer ms", "layer tok/s", "GFLOP/s", "x groups",
                  "x one", "min u", "max u", "variance", "dropped", "min group", "weights GB/s"},
                 table);
    report.paragraph("Memory bandwidth measured by a copy in this run: " + Cell::fixed(bandwidth, 1).text +
                     " GB/s. Where groups are small (a few dozen tokens per expert), reading the expert weights, "
                     "not the arithmetic, bounds the layer: compare the weights GB/s column with it.");
    // The speed targets of bench/RESULTS.md, summarised (reported, never checked: speed depends
    // on the machine). x one is judged only where every expert got at least 256 tokens.
    {
        std::vector<std::string> lines;
        int64_t eligible = 0, within = 0;
        double worst = 0, gemm_share_min = 1e300;
        for (const Result& r : results) {
            gemm_share_min = std::min(gemm_share_min, r.groups.median / r.layer.median);
            if (r.min_group < 256) continue;
            ++eligible;
            const double x_one = r.layer.median / r.one.median;
            within += x_one <= 1.25;
            worst = std::max(worst, x_one);
        }
        if (!results.empty())
            lines.push_back("layer GFLOP/s over the experts' GEMMs alone (target >= 60%): lowest " +
                            Cell::fixed(100 * gemm_share_min, 0).text + "%");
        lines.push_back("x one <= 1.25 where every expert got >= 256 tokens: " + std::to_string(within) + " of " +
                        std::to_string(eligible) + " points" +
                        (eligible ? " (highest " + Cell::fixed(worst, 2).text + ")" : std::string()));
        for (const Result& r : results)
            if (r.p.experts == 8 && r.p.k == 2 && d_model == 512 && r.tokens == 8192)
                lines.push_back("router alone at d 512, E 8, k 2, 8192 tokens, cf " + cf_name(r.p.cf) + ": " +
                                Cell::fixed(r.tokens / r.router.median / 1e6, 2).text +
                                " million tokens/s (target >= 5)");
        report.heading("Against the speed targets (bench/RESULTS.md)");
        report.bullets(lines);
    }
    report.heading("Checks");
    std::vector<std::string> check_lines;
    for (auto& [what, ok] : checks) check_lines.push_back(std::string(ok ? "PASS " : "FAIL ") + what);
    report.bullets(check_lines.empty() ? std::vector<std::string>{"none (--smoke)"} : check_lines);
    report.heading("Plots");
    report.image("tokens_per_second.png", "layer tokens/s against experts");
    for (const std::string& png : utilization_pngs) report.image(png, png);
    report.paragraph("The data: `results.csv` (one row per point), `metrics.json`.");
    report.heading("Command");
    report.code(cli.command_line(), "sh");
    report.write(out + "report.md");
    std::printf("report: %sreport.md\n", out.c_str());
    return all_ok ? 0 : 1;
}

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const CliError& e) {
        std::fprintf(stderr, "04_router_benchmark: error: %s\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "04_router_benchmark: %s\n", e.what());
        return 1;
    }
}
