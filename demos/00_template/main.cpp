// Demo template: the smallest complete demo, to copy when you add a level of your own.
//
// It trains a small MLP (20-32-3) on the synthetic sentiment data and does everything a demo of
// the ladder does, in the order a demo reads: flags, data, model, training loop with a progress
// bar, evaluation, a check of its own result, and the run folder (metrics.json, a PNG, report.md).
// docs/extending.md walks through it; docs/demos/kit.md lists the kit it uses.
//
//   ./build/demos/00_template --help
//   ./build/demos/00_template --quick                  (well under a second)
//   ./build/demos/00_template --save runs/t.safetensors && ./build/demos/00_template --load runs/t.safetensors --evaluate
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "demos/common/cli.h"
#include "demos/common/datasets.h"
#include "demos/common/json.h"
#include "demos/common/plot.h"
#include "demos/common/progress.h"
#include "demos/common/report.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/checkpoint.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/optim.h"

using namespace mg;
using namespace mg::demo;

// ---- the model: replace this with what your level is about ---------------------------------------
class TinyMLP : public nn::Module {
public:
    TinyMLP(int64_t d_in, int64_t hidden, int64_t d_out, Generator& gen) {
        fc1 = register_module("fc1", std::make_shared<nn::Linear>(d_in, hidden, gen));
        fc2 = register_module("fc2", std::make_shared<nn::Linear>(hidden, d_out, gen));
    }
    // x (B, d_in) -> logits (B, d_out)
    Tensor forward(const Tensor& x) const { return (*fc2)(relu((*fc1)(x))); }
    std::string type_name() const override { return "TinyMLP"; }

    std::shared_ptr<nn::Linear> fc1, fc2;
};

// Accuracy of the model on a whole data set, without recording a graph. The features go to the
// model's device; to_vector brings the predictions back to the host from any device.
double accuracy(const TinyMLP& model, const ClassificationData& data, Device device) {
    NoGradGuard no_grad;
    std::vector<int64_t> predicted = argmax(model.forward(data.x(device)), 1).to_vector<int64_t>();
    int64_t correct = 0;
    for (int64_t i = 0; i < data.rows(); ++i) correct += predicted[i] == data.labels[i];
    return (double)correct / (double)data.rows();
}

int run(int argc, char** argv) {
    // ---- flags: the standard set plus this demo's own ---------------------------------------------
    Cli cli("00_template", "The demo template: a small MLP on the synthetic sentiment data.");
    StandardFlags flags = add_standard_flags(cli);
    int64_t& epochs = cli.flag("epochs", 10, "training epochs");
    int64_t& batch_size = cli.flag("batch", 64, "mini-batch size");
    double& lr = cli.flag("lr", 3e-3, "Adam learning rate");
    int64_t& hidden = cli.flag("hidden", 32, "hidden units");
    bool& smoke = cli.flag("smoke", false, "a few steps only, no quality check (sanitizer runs)");
    cli.example("./build/demos/00_template --quick", "a run of well under a second");
    cli.parse(argc, argv);
    const int threads = apply_standard_flags(flags);
    const Device device = selected_device(flags);  // --device cuda stops here with the reason when no GPU is usable
    // --quick lowers the defaults only where the user did not choose.
    int64_t train_rows = 6000;
    if (flags.quick || smoke) {
        if (!cli.given("epochs")) epochs = smoke ? 1 : 4;
        train_rows = 2000;
    }

    // ---- data -------------------------------------------------------------------------------------
    Generator gen((uint64_t)flags.seed);
    SentimentSplits data = sentiment_dataset({.train = train_rows, .test = 1500}, gen);
    std::printf("data: %lld train / %lld test rows; the best reachable accuracy is %.4f\n",
                (long long)data.train.rows(), (long long)data.test.rows(), data.test.best_reachable_accuracy);

    // ---- model, optimizer, and a checkpoint to start from ------------------------------------------
    TinyMLP model(data.train.num_features, hidden, data.train.num_classes, gen);
    model.to(device);  // before the optimizer, so that its state is made on the same device
    nn::Adam opt(model.parameters(), {.lr = lr});
    BatchIterator batches(data.train, batch_size, gen, /*shuffle=*/true, /*drop_last=*/false, device);
    if (!flags.load.empty()) {
        // The model, the optimizer and where the batches were: training goes on exactly where it stopped.
        nn::TrainingState state = nn::load_checkpoint(flags.load, model, &opt);
        batches.set_state({std::stoull(state.metadata.at("batches.seed")), std::stoll(state.metadata.at("batches.epoch")),
                           state.data_position});
        std::printf("loaded %s (%lld steps, %lld epochs done)\n", flags.load.c_str(), (long long)state.step,
                    (long long)batches.epochs_done());
    }

    // ---- training -----------------------------------------------------------------------------------
    std::vector<double> epoch_axis, train_loss, test_accuracy;
    const int64_t epochs_to_run = flags.evaluate ? 0 : epochs;
    Progress bar(epochs_to_run * batches.batches_per_epoch(), "train");  // with --load: this many more epochs
    int64_t step = 0;
    for (int64_t epoch = 0; epoch < epochs_to_run; ++epoch) {
        double loss_sum = 0;
        int64_t seen = 0;
        for (const Batch& batch : batches.epoch()) {
            if (smoke && seen == 3) continue;  // --smoke: 3 steps an epoch (finish the epoch's order)
            Tensor loss = cross_entropy(model.forward(batch.x), batch.y);
            opt.zero_grad();
            loss.backward();
            opt.step();
            loss_sum += loss.item();
            ++seen;
            bar.update(++step, {{"loss", loss_sum / seen}}, batch.x.size(0));
        }
        epoch_axis.push_back((double)(epoch + 1));
        train_loss.push_back(loss_sum / (double)std::max<int64_t>(seen, 1));
        test_accuracy.push_back(accuracy(model, data.test, device));
    }
    bar.finish(test_accuracy.empty() ? Metrics{} : Metrics{{"test acc", test_accuracy.back()}});
    if (!flags.save.empty()) {
        BatchIterator::State where = batches.state();
        nn::save_checkpoint(flags.save, model, &opt,
                            {.step = step,
                             .data_position = where.position,
                             .metadata = {{"batches.seed", std::to_string(where.seed)},
                                          {"batches.epoch", std::to_string(where.epoch)}}});
        std::printf("saved %s\n", flags.save.c_str());
    }

    // ---- evaluation and this demo's own check ------------------------------------------------------
    const double test_acc = accuracy(model, data.test, device);
    const double chance = 1.0 / (double)data.test.num_classes;
    const bool passed = smoke || flags.evaluate || test_acc >= chance + 0.1;
    std::printf("test accuracy %.4f (best reachable %.4f, chance %.4f): %s\n", test_acc,
                data.test.best_reachable_accuracy, chance, passed ? "ok" : "FAILED: not clearly above chance");

    // ---- the run folder: metrics.json, a plot, report.md ------------------------------------------
    const std::string out = flags.out + "/";
    Json metrics = run_info(cli, flags);
    metrics["accuracy"] = test_acc;
    metrics["best_reachable_accuracy"] = data.test.best_reachable_accuracy;
    metrics["train_seconds"] = bar.elapsed_seconds();
    metrics["train_samples_per_second"] = bar.samples_per_second();
    metrics["parameters"] = model.num_parameters();
    metrics["test_accuracy_per_epoch"] = test_accuracy;
    metrics["passed"] = passed;
    write_json(out + "metrics.json", metrics);

    plot::line_chart(out + "training.png", {.title = "training", .xlabel = "epoch", .ylabel = "value"},
                     {{"train loss", epoch_axis, train_loss}, {"test accuracy", epoch_axis, test_accuracy}});

    Report report("Demo template: a small MLP on the sentiment data");
    report.paragraph("A 20-" + std::to_string(hidden) + "-3 MLP trained with Adam on " +
                     std::to_string(data.train.rows()) + " synthetic reviews (" + std::to_string(threads) +
                     " threads, seed " + std::to_string(flags.seed) + ").");
    report.table({"metric", "value"}, {{"test accuracy", Cell::fixed(test_acc, 4)},
                                       {"best reachable accuracy", Cell::fixed(data.test.best_reachable_accuracy, 4)},
                                       {"parameters", model.num_parameters()},
                                       {"training time (s)", bar.elapsed_seconds()},
                                       {"samples / s", bar.samples_per_second()}});
    report.image("training.png", "training loss and test accuracy per epoch");
    report.heading("Command");
    report.code(cli.command_line(), "sh");
    report.write(out + "report.md");
    std::printf("report: %sreport.md\n", out.c_str());
    return passed ? 0 : 1;
}

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "00_template: %s\n", e.what());
        return 1;
    }
}
