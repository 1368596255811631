// Demo level 2: the router's knobs (balancing losses, noise, capacity) on skewed data.
//
// The story: level 1's experts (4 MLPs of 20-64-32-3) on its synthetic reviews, but now the four
// sub-populations are far from equally common (by default 70% plain, 20% negated, 7% sarcastic,
// 3% technical), standardised. On standardised features level 1's top-2 gate (softmax over the
// two kept logits) stays nearly even by itself; the gate of Switch Transformers (top-1, the
// expert's softmax probability as its weight) does not: an expert is rewarded for being chosen, and a few experts take most tokens.
// With that router we train, on the same data and seeds:
//   A. ways to keep the experts evenly used (no capacity limit):
//        none                    no auxiliary loss                       (drifts to a few experts)
//        switch                  Switch balance loss  alpha E sum_e f_e P_e
//        noisy_importance        Shazeer noisy top-k gating + importance and load losses
//        jitter                  Switch input jitter only (multiplicative noise, no loss)
//        switch_z                the Switch loss + the ST-MoE router z-loss
//        top2_none               level 1's top-2 gate, no balancing, for comparison
//   B. the Switch configuration with a capacity limit: factors 1.0, 1.25, 1.5, 2.0 and dropless
// and report for each: test accuracy, dropped_fraction (test and training), utilization,
// balance_variance, specialization and the router's logit size (what the z-loss shrinks), with
// plots of utilization over training, dropped fraction against the capacity factor and the final
// utilization. The run checks its own targets and exits 1 when it misses them.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "demos/common/cli.h"
#include "demos/common/datasets.h"
#include "demos/common/plot.h"
#include "demos/common/progress.h"
#include "demos/common/report.h"
#include "nn/checkpoint.h"
#include "nn/metrics.h"
#include "nn/moe.h"
#include "nn/optim.h"

using namespace mg;
using namespace mg::demo;

namespace {

constexpr int64_t kExperts = 4;
const std::vector<int64_t> kExpertHidden = {64, 32};  // each expert: 20 -> 64 -> 32 -> 3

// ---- the configurations -----------------------------------------------------------------------------
struct Variant {
    std::string key, title;
    bool capacity_sweep = false;  // part B
    double capacity_factor = 0;   // 0 = dropless
    nn::MoEConfig config;         // k, the gate and the router options; sizes are filled in by make_model
};

struct Knobs {
    int64_t k;
    bool raw_gates;  // Switch: the kept softmax probabilities as they are
    double alpha, importance, load, jitter, z_loss;
    std::vector<double> capacity_factors;
    nn::DropPolicy drop_policy;
    nn::CapacityPriority priority;
};

std::string cf_name(double cf) {
    char text[32];
    std::snprintf(text, sizeof text, "%.2f", cf);
    std::string s = text;
    while (s.back() == '0') s.pop_back();  // 1.50 -> 1.5, 2.00 -> 2.
    if (s.back() == '.') s += "0";
    return s;
}

std::vector<Variant> make_variants(const Knobs& knobs) {
    auto router = [&](double alpha) {
        nn::MoEConfig c;  // sizes are filled in by make_model
        c.k = knobs.k;
        c.softmax_over_topk = !knobs.raw_gates;
        c.renormalize = !knobs.raw_gates;
        c.balance_alpha = alpha;
        return c;
    };
    std::vector<Variant> v;
    v.push_back({"none", "no balancing", false, 0, router(0)});
    v.push_back({"switch", "Switch balance loss", false, 0, router(knobs.alpha)});
    nn::MoEConfig noisy = router(0);
    noisy.noise = nn::RouterNoise::NoisyTopK;
    noisy.importance_alpha = knobs.importance;
    noisy.load_alpha = knobs.load;
    v.push_back({"noisy_importance", "noisy top-k + importance/load", false, 0, noisy});
    nn::MoEConfig jittered = router(0);
    jittered.jitter = knobs.jitter;
    v.push_back({"jitter", "jitter only", false, 0, jittered});
    nn::MoEConfig z = router(knobs.alpha);
    z.z_loss_alpha = knobs.z_loss;
    v.push_back({"switch_z", "Switch loss + z-loss", false, 0, z});
    // For comparison: level 1's gate (top-2, softmax over the two kept logits), no balancing.
    nn::MoEConfig level1 = router(0);
    level1.k = 2;
    level1.softmax_over_topk = level1.renormalize = true;
    v.push_back({"top2_none", "top-2 softmax gate, no balancing", false, 0, level1});
    for (double cf : knobs.capacity_factors) {
        nn::MoEConfig c = router(knobs.alpha);
        c.capacity_factor = cf;  // the same factor in training and evaluation
        c.capacity_priority = knobs.priority;
        c.drop_policy = knobs.drop_policy;
        v.push_back({"cf_" + cf_name(cf), "Switch, capacity " + cf_name(cf), true, cf, c});
    }
    v.push_back({"dropless", "Switch, dropless", true, 0, router(knobs.alpha)});
    return v;
}

std::shared_ptr<nn::SpecializedExpertNetwork> make_model(const Variant& v, int64_t features, int64_t classes,
                                                         Generator& gen) {
    nn::MoEConfig c = v.config;
    c.d_in = features;
    c.hidden = kExpertHidden;
    c.d_out = classes;
    c.experts = kExperts;
    return std::make_shared<nn::SpecializedExpertNetwork>(c, gen);
}

// ---- training and evaluation ---------------------------------------------------------------------
struct Evaluation {
    double accuracy = 0;
    nn::metrics::RoutingStats by_class, by_subpopulation;
    double router_z = 0;  // mean over tokens of logsumexp(logits)^2: what the z-loss penalises
};

struct RunResult {
    std::vector<double> window_steps;                   // the step at the end of each window
    std::vector<std::vector<double>> window_utilization; // (E) series: share of kept training slots
    std::vector<double> train_loss, test_accuracy;      // one point per epoch
    double train_dropped_fraction = 0;                  // tokens that lost a slot, over all of training
    int64_t steps = 0;                                  // optimizer steps taken
    Evaluation final;
    double train_seconds = 0, samples_per_second = 0;
};

// The test rows go to `device`, where the model is; the metrics read the results on the host.
Evaluation evaluate(nn::SpecializedExpertNetwork& moe, const SentimentData& test, Device device) {
    NoGradGuard no_grad;
    moe.eval();  // no noise, no jitter; the evaluation capacity factor
    auto out = moe(test.x(device));
    moe.train();
    Evaluation e;
    e.accuracy = nn::metrics::accuracy(out.y, test.y(device));
    std::vector<int64_t> ids = out.routing.flat_expert_ids();  // -1 = dropped by the capacity limit
    const int64_t k = moe.config().k;
    e.by_class = nn::metrics::compute_routing_stats(ids, k, test.labels, kExperts, test.num_classes);
    e.by_subpopulation =
        nn::metrics::compute_routing_stats(ids, k, test.subpopulations, kExperts, kSentimentSubpopulations);
    Tensor z = logsumexp(out.routing.logits, -1);
    e.router_z = mean(z * z).item();
    return e;
}

struct TrainOptions {
    int64_t epochs, batch, max_steps_per_epoch, window;
    double lr;
    Device device;  // where the model is: the batches are made there
};

RunResult train(const std::string& label, nn::SpecializedExpertNetwork& moe, nn::Adam& opt, const SentimentData& data,
                const SentimentData& test, const TrainOptions& options, Generator& gen) {
    RunResult result;
    BatchIterator batches(data, options.batch, gen, /*shuffle=*/true, /*drop_last=*/false, options.device);
    const int64_t steps_per_epoch = std::min(batches.batches_per_epoch(), options.max_steps_per_epoch);
    Progress bar(options.epochs * steps_per_epoch, label);
    std::vector<int64_t> window_counts(kExperts, 0);
    int64_t step = 0, tokens = 0, dropped_tokens = 0;
    result.window_utilization.assign(kExperts, {});
    for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
        double loss_sum = 0;
        int64_t seen = 0;
        Batch batch;
        while (batches.next(batch)) {
            if (seen == steps_per_epoch) continue;  // --smoke: stop early, but finish the epoch's order
            auto out = moe(batch.x);
            Tensor loss = cross_entropy(out.y, batch.y);
            opt.zero_grad();
            (loss + out.aux_loss).backward();  // aux_loss: every auxiliary loss the config turns on
            opt.step();
            loss_sum += loss.item();
            ++seen;
            ++step;
            // Utilization of this batch's kept slots, summed over a window of steps.
            for (int64_t e = 0; e < kExperts; ++e) window_counts[e] += out.routing.expert_counts[e];
            tokens += batch.x.size(0);
            dropped_tokens += out.routing.dropped_tokens;
            if (step % options.window == 0) {
                int64_t total = 0;
                for (int64_t n : window_counts) total += n;
                for (int64_t e = 0; e < kExperts; ++e)
                    result.window_utilization[e].push_back(total ? (double)window_counts[e] / (double)total : 0.0);
                result.window_steps.push_back((double)step);
                window_counts.assign(kExperts, 0);
            }
            bar.update(step, {{"loss", loss_sum / seen}}, batch.x.size(0));
        }
        result.train_loss.push_back(loss_sum / std::max<int64_t>(seen, 1));
        result.test_accuracy.push_back(evaluate(moe, test, options.device).accuracy);
    }
    bar.finish({{"test acc", result.test_accuracy.back()}});
    result.train_seconds = bar.elapsed_seconds();
    result.samples_per_second = bar.samples_per_second();
    result.train_dropped_fraction = tokens ? (double)dropped_tokens / (double)tokens : 0.0;
    result.steps = step;
    result.final = evaluate(moe, test, options.device);
    return result;
}

std::vector<double> parse_numbers(const std::string& text, const std::string& flag) {
    std::vector<double> out;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        try {
            size_t used = 0;
            out.push_back(std::stod(item, &used));
            if (used != item.size()) throw std::invalid_argument(item);
        } catch (const std::exception&) {
            throw CliError("--" + flag + " expects numbers separated by commas, got '" + text + "'");
        }
    }
    return out;
}

std::vector<std::string> expert_labels() {
    std::vector<std::string> out;
    for (int64_t e = 0; e < kExperts; ++e) out.push_back("expert " + std::to_string(e));
    return out;
}

}  // namespace

int main(int argc, char** argv) try {
    // ---- flags ------------------------------------------------------------------------------------
    Cli cli("02_noisy_topk_capacity",
            "Level 2: balancing losses, noisy top-k, jitter, z-loss and the capacity factor on skewed data.");
    StandardFlags flags = add_standard_flags(cli, 0);
    int64_t& epochs = cli.flag("epochs", int64_t(15), "training epochs per configuration");
    int64_t& seeds = cli.flag("seeds", int64_t(3), "seeds to train (results are medians over them)");
    int64_t& batch_size = cli.flag("batch", int64_t(64), "mini-batch size (the capacity is per batch)");
    double& lr = cli.flag("lr", 3e-3, "Adam learning rate");
    std::string& skew_text = cli.flag("skew", std::string("0.7,0.2,0.07,0.03"),
                                      "shares of the sub-populations plain, negated, sarcastic, technical");
    double& alpha = cli.flag("alpha", 0.1, "Switch balance loss weight (alpha * E * sum_e f_e P_e)");
    double& importance = cli.flag("importance", 0.1, "importance loss weight (alpha * CV^2 of gate sums), Shazeer");
    double& load = cli.flag("load-loss", 0.1, "load loss weight (alpha * CV^2 of the smooth load), Shazeer");
    double& jitter = cli.flag("jitter", 0.1, "Switch jitter: router input times U(1 - eps, 1 + eps)");
    double& z_loss = cli.flag("z-loss", 1e-3, "router z-loss weight (alpha * mean logsumexp(logits)^2), ST-MoE");
    std::string& cf_text = cli.flag("capacity-factors", std::string("1.0,1.25,1.5,2.0"), "capacity factors of part B");
    std::string& policy = cli.flag("drop-policy", std::string("renormalize"),
                                   "a token's gates after it lost a slot", {"renormalize", "zero"});
    std::string& priority = cli.flag("priority", std::string("first-come"), "who keeps a slot when an expert is full",
                                     {"first-come", "highest-gate"});
    int64_t& k = cli.flag("k", int64_t(1), "experts per token (1: Switch)");
    std::string& gate = cli.flag("gate", std::string("raw-probs"),
                                 "gate weights: raw-probs = the kept softmax probabilities (Switch), topk-softmax = "
                                 "softmax over the k kept logits (level 1, Mixtral)",
                                 {"raw-probs", "topk-softmax"});
    bool& smoke = cli.flag("smoke", false, "a few steps only, no quality checks (for sanitizer runs)");
    cli.example("./build/demos/02_noisy_topk_capacity", "the default run: 3 seeds, about a minute on 2 cores");
    cli.example("./build/demos/02_noisy_topk_capacity --quick", "one seed, fewer epochs, looser checks");
    cli.example("./build/demos/02_noisy_topk_capacity --skew 0.25,0.25,0.25,0.25", "the same on balanced data");
    cli.parse(argc, argv);
    const int threads = apply_standard_flags(flags);
    if (k < 1 || k >= kExperts) throw CliError("--k must be in [1, " + std::to_string(kExperts - 1) + "], got " + std::to_string(k));
    const Device device = selected_device(flags);  // --device cuda stops here with the reason when no GPU is usable
    if (flags.quick || smoke) {
        if (!cli.given("epochs")) epochs = smoke ? 1 : 8;
        if (!cli.given("seeds")) seeds = 1;
    }
    const std::vector<double> skew = parse_numbers(skew_text, "skew");
    const Knobs knobs{k, gate == "raw-probs", alpha, importance, load, jitter, z_loss, parse_numbers(cf_text, "capacity-factors"),
                      policy == "zero" ? nn::DropPolicy::Zero : nn::DropPolicy::Renormalize,
                      priority == "highest-gate" ? nn::CapacityPriority::HighestGate : nn::CapacityPriority::FirstCome};
    for (double cf : knobs.capacity_factors)
        if (!(cf > 0)) throw CliError("--capacity-factors: every factor must be > 0 (dropless is always run), got " + cf_name(cf));
    const std::vector<Variant> variants = make_variants(knobs);

    // ---- data -------------------------------------------------------------------------------------
    Generator data_gen((uint64_t)flags.seed);
    SentimentSplits data = sentiment_dataset({.subpopulation_weights = skew}, data_gen);
    const Standardizer standardize = Standardizer::fit(data.train);  // fit on the training rows only
    standardize.apply(data.train);
    standardize.apply(data.test);
    const int64_t F = data.train.num_features, C = data.train.num_classes;
    const double best = data.test.best_reachable_accuracy;
    std::printf("data: %lld train / %lld test rows; sub-populations %s; best reachable accuracy %.4f\n",
                (long long)data.train.rows(), (long long)data.test.rows(), skew_text.c_str(), best);

    // ---- train every configuration on every seed ----------------------------------------------------
    std::map<std::string, std::vector<RunResult>> results;
    const TrainOptions options{epochs, batch_size, smoke ? 3 : INT64_MAX, smoke ? 1 : 20, lr, device};
    for (int64_t s = 0; s < seeds; ++s) {
        const uint64_t seed = (uint64_t)flags.seed + 1000 * (uint64_t)(s + 1);
        for (const Variant& v : variants) {
            Generator init_gen(seed);  // every configuration starts from the same expert weights
            auto moe = make_model(v, F, C, init_gen);
            moe->to(device);  // before the optimizer, so that its state is made on the same device
            nn::Adam opt(moe->parameters(), {.lr = lr});
            Generator order_gen(seed + 7);  // and sees the same batches
            const bool primary = v.key == "switch" && s == 0;
            if (primary && !flags.load.empty()) {
                nn::TrainingState state = nn::load_checkpoint(flags.load, *moe, &opt);
                std::printf("loaded %s (step %lld)\n", flags.load.c_str(), (long long)state.step);
            }
            if (flags.evaluate) {
                if (!primary) continue;
                RunResult r;
                r.final = evaluate(*moe, data.test, device);
                results[v.key].push_back(r);
                continue;
            }
            results[v.key].push_back(train(v.key, *moe, opt, data.train, data.test, options, order_gen));
            if (primary && !flags.save.empty()) {
                nn::save_checkpoint(flags.save, *moe, &opt, {.step = results[v.key].back().steps});
                std::printf("saved %s\n", flags.save.c_str());
            }
        }
    }

    // ---- metrics: medians over seeds ------------------------------------------------------------------
    auto med = [&](const std::string& key, auto get) {
        std::vector<double> v;
        for (const RunResult& r : results[key]) v.push_back(get(r));
        return median(v);
    };
    auto acc = [](const RunResult& r) { return r.final.accuracy; };
    auto var = [](const RunResult& r) { return r.final.by_class.balance_variance; };
    auto test_drop = [](const RunResult& r) { return r.final.by_class.dropped_fraction; };
    auto train_drop = [](const RunResult& r) { return r.train_dropped_fraction; };
    auto spec = [](const RunResult& r) { return r.final.by_class.specialization_index; };
    auto sub_spec = [](const RunResult& r) { return r.final.by_subpopulation.specialization_index; };
    auto router_z = [](const RunResult& r) { return r.final.router_z; };
    auto max_share = [](const RunResult& r) {
        return *std::max_element(r.final.by_class.utilization.begin(), r.final.by_class.utilization.end());
    };

    Json metrics = run_info(cli, flags);
    metrics["threads"] = threads;
    metrics["seeds"] = seeds;
    metrics["best_reachable_accuracy"] = best;
    metrics["subpopulation_weights"] = skew;
    Json configs = Json::object();
    std::vector<std::vector<Cell>> table_a, table_b;
    for (const Variant& v : variants) {
        if (!results.count(v.key)) continue;
        const RunResult& first = results[v.key][0];
        Json m = Json::object();
        m["title"] = v.title;
        m["capacity_factor"] = v.capacity_factor;
        m["accuracy"] = med(v.key, acc);
        std::vector<double> per_seed;
        for (const RunResult& r : results[v.key]) per_seed.push_back(r.final.accuracy);
        m["accuracy_per_seed"] = per_seed;
        m["utilization"] = std::vector<std::vector<double>>{first.final.by_class.utilization};
        m["balance_variance"] = med(v.key, var);
        m["dropped_fraction"] = med(v.key, test_drop);
        m["train_dropped_fraction"] = med(v.key, train_drop);
        m["specialization_entropy_bits"] = med(v.key, [](const RunResult& r) { return r.final.by_class.specialization_entropy_bits; });
        m["specialization_index"] = med(v.key, spec);
        m["specialization_index_subpopulation"] = med(v.key, sub_spec);
        m["router_logsumexp_squared"] = med(v.key, router_z);
        m["train_seconds"] = med(v.key, [](const RunResult& r) { return r.train_seconds; });
        m["train_samples_per_second"] = med(v.key, [](const RunResult& r) { return r.samples_per_second; });
        configs[v.key] = m;
        std::vector<Cell> row{Cell(v.title), Cell::percent(med(v.key, acc)), Cell::fixed(med(v.key, var), 4),
                              Cell::fixed(med(v.key, max_share), 3)};
        if (v.capacity_sweep) {
            row.push_back(Cell::percent(med(v.key, train_drop), 2));
            row.push_back(Cell::percent(med(v.key, test_drop), 2));
        }
        row.push_back(Cell::fixed(med(v.key, spec), 3));
        row.push_back(Cell::fixed(med(v.key, sub_spec), 3));
        if (!v.capacity_sweep) row.push_back(Cell::fixed(med(v.key, router_z), 2));
        (v.capacity_sweep ? table_b : table_a).push_back(row);
    }
    metrics["configurations"] = configs;
    const std::vector<std::string> header_a = {"configuration", "test accuracy", "balance variance", "busiest expert",
                                               "spec. index (class)", "spec. index (sub-pop.)", "mean lse(logits)^2"};
    const std::vector<std::string> header_b = {"configuration", "test accuracy", "balance variance", "busiest expert",
                                               "dropped (train)", "dropped (test)", "spec. index (class)",
                                               "spec. index (sub-pop.)"};

    // ---- the checks (--quick has looser bars, --smoke and --evaluate none) ---------------------------------
    std::vector<std::pair<std::string, bool>> checks;
    std::vector<std::string> notes;  // what was measured but not checked, and why
    auto check = [&](bool ok, const char* format, auto... args) {
        char text[300];
        std::snprintf(text, sizeof text, format, args...);
        checks.push_back({text, ok});
    };
    if (!smoke && !flags.evaluate) {
        // Balancing: each loss-based method evens the experts out compared with no balancing, when
        // there is something to even out (with --k 2 --gate topk-softmax there is not: see the docs).
        const double var_none = med("none", var);
        if (var_none >= 0.002) {
            for (const char* key : {"switch", "noisy_importance", "switch_z"})
                check(med(key, var) < 0.5 * var_none, "%s: balance variance %.4f < half of no balancing's %.4f", key,
                      med(key, var), var_none);
        } else {
            notes.push_back("No balancing already gives balance variance " + format_number(var_none) +
                            " (< 0.002): the balancing methods are not checked against it.");
        }
        // z-loss: smaller router logits than the same run without it.
        check(med("switch_z", router_z) < med("switch", router_z), "z-loss: mean lse(logits)^2 %.2f < %.2f without it",
              med("switch_z", router_z), med("switch", router_z));
        // Capacity: fewer drops as the factor grows, none without a limit.
        std::vector<double> drops;
        for (double cf : knobs.capacity_factors) drops.push_back(med("cf_" + cf_name(cf), train_drop));
        bool monotone = true;
        for (size_t i = 1; i < drops.size(); ++i) monotone = monotone && drops[i] <= drops[i - 1];
        check(monotone, "training dropped fraction does not grow with the capacity factor (%.4f ... %.4f)",
              drops.front(), drops.back());
        check(med("dropless", train_drop) == 0 && med("dropless", test_drop) == 0, "dropless drops nothing");
        if (!knobs.capacity_factors.empty())
            check(drops.front() > 0, "capacity %s drops tokens in training (%.4f)", cf_name(knobs.capacity_factors.front()).c_str(),
                  drops.front());
        // Accuracy: every configuration learns the task. A token that loses its only slot (k = 1)
        // gets no output at all, so a capacity run may lose up to the tokens it drops at test time.
        const double gap = flags.quick ? 0.10 : 0.06;
        for (const Variant& v : variants) {
            const double allowed = best - gap - med(v.key, test_drop);
            check(med(v.key, acc) >= allowed, "%s: accuracy %.3f >= %.3f (best reachable %.3f - %.0f points - dropped %.3f)",
                  v.key.c_str(), med(v.key, acc), allowed, best, gap * 100, med(v.key, test_drop));
        }
    }
    Json checks_json = Json::array();
    bool all_ok = true;
    for (auto& [what, ok] : checks) {
        checks_json.push_back(Json::object({{"check", what}, {"passed", ok}}));
        all_ok = all_ok && ok;
    }
    metrics["checks"] = checks_json;
    metrics["notes"] = notes;
    metrics["passed"] = all_ok;

    // ---- plots (the first seed) -------------------------------------------------------------------------------
    ensure_directory(flags.out);
    const std::string out = flags.out + "/";
    std::vector<std::string> images;
    if (!flags.evaluate) {
        for (const Variant& v : variants) {
            if (v.capacity_sweep && v.key != "cf_1.0" && v.key != "dropless") continue;
            const RunResult& r = results[v.key][0];
            std::vector<plot::Series> series;
            for (int64_t e = 0; e < kExperts; ++e)
                series.push_back({"expert " + std::to_string(e), r.window_steps, r.window_utilization[e]});
            series.push_back({"uniform 1/E", {r.window_steps.front(), r.window_steps.back()}, {0.25, 0.25}});
            const std::string file = "utilization_steps_" + v.key + ".png";
            plot::line_chart(out + file,
                             {.title = "Share of training slots per expert: " + v.title,
                              .xlabel = "training step (mean over " + std::to_string(options.window) + " steps)",
                              .ylabel = "fraction of kept slots"},
                             series);
            images.push_back(file);
        }
        // The busiest expert's share, every configuration of part A on one chart.
        std::vector<plot::Series> busiest;
        for (const Variant& v : variants) {
            if (v.capacity_sweep) continue;
            const RunResult& r = results[v.key][0];
            std::vector<double> top(r.window_steps.size(), 0.0);
            for (size_t i = 0; i < top.size(); ++i)
                for (int64_t e = 0; e < kExperts; ++e) top[i] = std::max(top[i], r.window_utilization[e][i]);
            busiest.push_back({v.title, r.window_steps, top});
        }
        plot::line_chart(out + "busiest_expert_steps.png",
                         {.title = "Busiest expert's share of training slots (0.25 = even)",
                          .xlabel = "training step", .ylabel = "largest utilization"},
                         busiest);
        // Dropped fraction against the capacity factor.
        std::vector<double> xs, train_ys, test_ys;
        for (double cf : knobs.capacity_factors) {
            xs.push_back(cf);
            train_ys.push_back(med("cf_" + cf_name(cf), train_drop));
            test_ys.push_back(med("cf_" + cf_name(cf), test_drop));
        }
        plot::line_chart(out + "dropped_vs_capacity.png",
                         {.title = "Tokens that lost a slot, by capacity factor (dropless: 0)",
                          .xlabel = "capacity factor", .ylabel = "dropped fraction"},
                         {{"training batches of " + std::to_string(batch_size), xs, train_ys},
                          {"test set, one batch of " + std::to_string(data.test.rows()), xs, test_ys}});
    }
    std::vector<plot::BarSeries> bars;
    for (const Variant& v : variants)
        if (results.count(v.key) && (!v.capacity_sweep || v.key == "cf_1.0"))
            bars.push_back({v.title, results[v.key][0].final.by_class.utilization});
    plot::bar_chart(out + "utilization.png",
                    {.title = "Expert utilization on the test set", .xlabel = "expert", .ylabel = "fraction of routing slots"},
                    expert_labels(), bars, 1.0 / kExperts, "uniform 1/E");

    // ---- report ------------------------------------------------------------------------------------------
    Report report("Level 2: balancing, noise and capacity on skewed data");
    report.paragraph("Level 1's experts (4 MLPs of 20-64-32-3) with a top-" + std::to_string(k) + " router, gate " + gate +
                     ", on the synthetic reviews with sub-populations plain/negated/sarcastic/technical at " + skew_text +
                     "; label noise 8%, so the best reachable test accuracy is " + Cell::percent(best).text + ".");
    report.paragraph("Results are medians over " + std::to_string(seeds) + " seed(s); plots show the first seed. "
                     "Balancing weights: Switch alpha " + format_number(alpha) + ", importance " +
                     format_number(importance) + ", load " + format_number(load) + ", jitter " + format_number(jitter) +
                     ", z-loss " + format_number(z_loss) + ". Capacity runs use the Switch loss, drop policy " + policy +
                     ", priority " + priority + ", the same factor in training and evaluation.");
    report.heading("A. Balancing (no capacity limit)");
    report.table(header_a, table_a);
    report.heading("B. Capacity factor (Switch loss)");
    report.table(header_b, table_b);
    report.heading("Checks");
    std::vector<std::string> check_lines;
    for (auto& [what, ok] : checks) check_lines.push_back(std::string(ok ? "PASS " : "FAIL ") + what);
    report.bullets(check_lines.empty() ? std::vector<std::string>{"none (--smoke or --evaluate)"} : check_lines);
    for (const std::string& note : notes) report.paragraph(note);
    report.heading("Plots");
    if (!flags.evaluate) {
        report.image("busiest_expert_steps.png", "busiest expert over training");
        for (const std::string& file : images) report.image(file, file);
        report.image("dropped_vs_capacity.png", "dropped fraction vs capacity factor");
    }
    report.image("utilization.png", "final utilization");
    report.heading("Command");
    report.code(command_line(argc, argv));
    report.write(out + "report.md");
    write_text_file(out + "metrics.json", metrics.dump());

    // ---- the terminal summary -----------------------------------------------------------------------------
    auto print_table = [](const std::vector<std::string>& header, const std::vector<std::vector<Cell>>& rows) {
        std::printf("\n%-32s", header[0].c_str());
        for (size_t i = 1; i < header.size(); ++i) std::printf(" %14.14s", header[i].c_str());
        std::printf("\n");
        for (const auto& row : rows) {
            std::printf("%-32s", row[0].text.c_str());
            for (size_t i = 1; i < row.size(); ++i) std::printf(" %14s", row[i].text.c_str());
            std::printf("\n");
        }
    };
    print_table(header_a, table_a);
    print_table(header_b, table_b);
    for (auto& [what, ok] : checks) std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
    for (const std::string& note : notes) std::printf("note: %s\n", note.c_str());
    std::printf("report: %sreport.md\n", out.c_str());
    return all_ok ? 0 : 1;
} catch (const CliError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
} catch (const std::exception& e) {
    std::fprintf(stderr, "02_noisy_topk_capacity: %s\n", e.what());
    return 1;
}
