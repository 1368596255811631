// demos/common/datasets.h: seeded synthetic data, a CSV loader and shuffled mini-batches.
//
// Data lives on the host as plain vectors (features row-major (N, D), labels (N)) and becomes
// mg::Tensor only per batch or per evaluation, so demos and tests share one generator and a test
// can check the numbers without the engine. Every random draw comes from an mg::Generator
// (Philox), so a seed gives the same data on every machine.
//
//   mg::Generator gen(seed);
//   mg::demo::SentimentSplits data = mg::demo::sentiment_dataset({.train = 6000, .test = 1500}, gen);
//   mg::demo::BatchIterator batches(data.train, 64, gen);
//   for (int64_t epoch = 0; epoch < epochs; ++epoch)
//       for (const mg::demo::Batch& b : batches.epoch())     // b.x (B, 20) float32, b.y (B) int64
//           ...
//
// The sentiment data set, its sub-populations and why a linear model cannot fit it are described
// in docs/demos/kit.md ("The sentiment data"). Errors throw DataError naming the file, line and
// column.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/device.h"
#include "engine/random.h"
#include "engine/tensor.h"

namespace mg::demo {

class DataError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A classification table on the host.
struct ClassificationData {
    std::vector<float> features;            // (rows, num_features), row-major
    std::vector<int64_t> labels;            // (rows), each in [0, num_classes)
    int64_t num_features = 0;
    int64_t num_classes = 0;
    std::vector<std::string> feature_names; // num_features names
    std::vector<std::string> class_names;   // num_classes names

    int64_t rows() const { return (int64_t)labels.size(); }
    // All rows as tensors: features (rows, num_features) float32, labels (rows) int64.
    Tensor x(Device device = Device::CPU) const;
    Tensor y(Device device = Device::CPU) const;
    // The rows at these indices, in this order (names and sizes kept).
    ClassificationData subset(const std::vector<int64_t>& indices) const;
    // Rows per class.
    std::vector<int64_t> class_counts() const;
    // Throws DataError when the sizes disagree or a label is out of range.
    void validate(const std::string& what = "ClassificationData") const;
};

// ---- the synthetic sentiment data of demo 01 ----------------------------------------------------
//
// Short reviews as 20 word counts. Four sub-populations of reviews use the same words with
// different meanings, and three "context" counts say which sub-population a review is from:
//   plain      no context words;        d = #positive - #negative words: d >= 2 positive,
//                                        d <= -2 negative, else neutral
//   negated    "not" >= 1;               the same words, flipped: d >= 2 negative, d <= -2 positive
//   sarcastic  "yeah right" >= 1;        strong words of either kind are mockery: |d| >= 2
//                                        negative, else neutral (never positive)
//   technical  technical terms >= 1;     the everyday words are noise; the domain words decide:
//                                        j = #(smooth, fast) - #(lag, crash), j >= 2 positive,
//                                        j <= -2 negative, else neutral
// The clean label is a deterministic function of the features; then with probability
// label_noise a label is replaced by a class drawn uniformly (possibly the same one). So the best
// accuracy any model can reach is 1 - label_noise * (C - 1) / C (the Bayes rule predicts the
// clean label), 0.9467 for the default 8% noise. A linear model (logistic regression) cannot
// express the flips and reaches about 0.60; a 20-64-32-3 MLP or a 4-expert mixture of them gets
// within about 2 points of the best in 20 epochs on 6000 rows (docs/demos/kit.md has the numbers).
struct SentimentConfig {
    int64_t train = 6000;
    int64_t test = 1500;
    double label_noise = 0.08;       // probability that a label is replaced by a uniform class
    bool skew = false;               // sub-populations at 55% / 25% / 15% / 5% instead of 25% each
    std::vector<double> subpopulation_weights{};  // overrides skew when not empty (4 weights)
};

struct SentimentData : ClassificationData {
    std::vector<int64_t> subpopulations;          // (rows): 0 plain, 1 negated, 2 sarcastic, 3 technical
    std::vector<int64_t> clean_labels;            // (rows): the labels before the label noise
    std::vector<std::string> subpopulation_names; // {"plain", "negated", "sarcastic", "technical"}
    double label_noise = 0;
    double best_reachable_accuracy = 1;           // 1 - label_noise * (C - 1) / C, exactly
    // Fraction of this sample whose label equals its clean label: the accuracy the best model
    // gets on exactly these rows (close to best_reachable_accuracy, which is its expectation).
    double clean_label_fraction() const;
};

struct SentimentSplits {
    SentimentData train, test;
};

inline constexpr int64_t kSentimentFeatures = 20;
inline constexpr int64_t kSentimentClasses = 3;
inline constexpr int64_t kSentimentSubpopulations = 4;

// `samples` rows drawn with `gen` (only label_noise, skew and subpopulation_weights of config
// are used). Throws std::invalid_argument for a noise rate outside [0, 1] or bad weights.
SentimentData make_sentiment(int64_t samples, const SentimentConfig& config, Generator& gen);
// config.train rows, then config.test rows, from the same generator.
SentimentSplits sentiment_dataset(const SentimentConfig& config, Generator& gen);
// The clean label of one row of 20 sentiment features (the rule above), and its sub-population.
int64_t sentiment_clean_label(const float* row);
int64_t sentiment_subpopulation(const float* row);

// ---- a user's own table ------------------------------------------------------------------------
//
// CSV rules: the first line is a header of column names; fields are separated by commas (no
// quoting), surrounding spaces are trimmed, blank lines are skipped, CRLF line ends are fine.
// The label column is the one named `label_column` ("label" by default), or the last column when
// no column has that name. Every other column is a numeric feature.
// Labels: when `class_names` is given, a label must be one of them (or its index 0..C-1), else
// "unknown label". Without it: when every label is an integer, they are class ids 0..max and the
// classes are named "0", "1", ...; otherwise labels are names, numbered in order of first
// appearance.
struct CsvOptions {
    std::string label_column = "label";
    std::vector<std::string> class_names{};
};
// Throws DataError naming the file, and the line and column where one applies:
//   "data.csv: no such file", "data.csv:4: 3 fields, the header has 4",
//   "data.csv:7, column 2 (x1): 'abc' is not a number", "data.csv:9: unknown label 'meh'
//   (classes: pos, neg)", "data.csv: no data rows".
ClassificationData load_csv_classification(const std::string& path, const CsvOptions& options = {});
// Writes the table with a header (feature names, then "label" as class names), for a learner
// to look at the data or to feed it back through --data.
void write_csv(const std::string& path, const ClassificationData& data);

// ---- preparing features -------------------------------------------------------------------------
// Per-feature mean and standard deviation of a training set, applied to any set: x' = (x - mean)
// / std (std of a constant column counts as 1). Fit on the training set only.
struct Standardizer {
    std::vector<float> mean, stddev;
    static Standardizer fit(const ClassificationData& train);
    void apply(ClassificationData& data) const;
};
// A shuffled split into (first, second) with round(test_fraction * rows) rows in second.
std::pair<ClassificationData, ClassificationData> train_test_split(const ClassificationData& data,
                                                                   double test_fraction, Generator& gen);

// ---- mini-batches -------------------------------------------------------------------------------
struct Batch {
    Tensor x;                       // (B, num_features) float32
    Tensor y;                       // (B) int64
    std::vector<int64_t> indices;   // the rows of the data set in this batch
};

// Shuffled mini-batches, epoch after epoch. The permutation of epoch e is a pure function of
// (seed, e), so the iterator's whole state is three integers: a checkpoint stores state() and a
// resumed run calls set_state() to continue with the very next batch.
class BatchIterator {
public:
    struct State {
        uint64_t seed = 0;
        int64_t epoch = 0;      // epochs completed
        int64_t position = 0;   // rows of the current epoch already handed out
    };

    // The shuffling seed is drawn from gen (one draw). shuffle=false keeps the data order.
    // drop_last drops a final batch smaller than batch_size.
    BatchIterator(const ClassificationData& data, int64_t batch_size, Generator& gen, bool shuffle = true,
                  bool drop_last = false, Device device = Device::CPU);

    // The next batch of the current epoch into `batch`; false (and the epoch counter moves on)
    // when the epoch is over, so `while (it.next(b))` runs exactly one epoch.
    bool next(Batch& batch);
    // The rest of the current epoch as a range: for (const Batch& b : it.epoch()) ...
    class EpochRange;
    EpochRange epoch();

    int64_t epochs_done() const { return state_.epoch; }
    int64_t position() const { return state_.position; }
    int64_t batches_per_epoch() const;
    int64_t batch_size() const { return batch_size_; }
    State state() const { return state_; }
    void set_state(const State& state);
    // The row order of an epoch (a permutation of 0..rows-1, or the identity without shuffle).
    std::vector<int64_t> permutation(int64_t epoch) const;

private:
    const ClassificationData* data_;
    int64_t batch_size_;
    bool shuffle_, drop_last_;
    Device device_;
    State state_;
    std::vector<int64_t> order_;     // permutation of epoch order_epoch_
    int64_t order_epoch_ = -1;
};

class BatchIterator::EpochRange {
public:
    class iterator {
    public:
        const Batch& operator*() const { return range_->batch_; }
        iterator& operator++() { advance(); return *this; }
        bool operator!=(const iterator& other) const { return done_ != other.done_; }
    private:
        friend class EpochRange;
        iterator(EpochRange* range, bool done) : range_(range), done_(done) { if (!done_) advance(); }
        void advance() { done_ = !range_->it_->next(range_->batch_); }
        EpochRange* range_;
        bool done_;
    };
    explicit EpochRange(BatchIterator* it) : it_(it) {}
    iterator begin() { return iterator(this, false); }
    iterator end() { return iterator(this, true); }
private:
    BatchIterator* it_;
    Batch batch_;
};

inline BatchIterator::EpochRange BatchIterator::epoch() { return EpochRange(this); }

}  // namespace mg::demo
