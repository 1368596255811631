// tests/test_datasets.cpp: the synthetic sentiment data, the CSV loader and the batch iterator
// of demos/common/datasets.h.
#include <doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "demos/common/datasets.h"

using namespace mg::demo;

namespace {
std::string temp_dir(const std::string& name) {
    auto dir = std::filesystem::temp_directory_path() / ("moegrad_test_datasets_" + name);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir.string();
}
std::string write(const std::string& dir, const std::string& name, const std::string& text) {
    std::string path = dir + "/" + name;
    std::ofstream(path) << text;
    return path;
}
std::string csv_error(const std::string& path, const CsvOptions& options = {}) {
    try {
        load_csv_classification(path, options);
    } catch (const DataError& e) {
        return e.what();
    }
    return "(no error)";
}
}  // namespace

TEST_CASE("dataset sentiment: shapes, names and determinism by seed") {
    mg::Generator gen_a(5), gen_b(5), gen_c(6);
    SentimentSplits a = sentiment_dataset({.train = 600, .test = 200}, gen_a);
    SentimentSplits b = sentiment_dataset({.train = 600, .test = 200}, gen_b);
    SentimentSplits c = sentiment_dataset({.train = 600, .test = 200}, gen_c);
    CHECK(a.train.rows() == 600);
    CHECK(a.test.rows() == 200);
    CHECK(a.train.features.size() == 600 * 20);
    CHECK(a.train.num_features == kSentimentFeatures);
    CHECK(a.train.num_classes == 3);
    CHECK(a.train.class_names == std::vector<std::string>{"positive", "negative", "neutral"});
    CHECK(a.train.subpopulation_names == std::vector<std::string>{"plain", "negated", "sarcastic", "technical"});
    CHECK(a.train.feature_names.size() == 20);
    CHECK(a.train.subpopulations.size() == 600);
    CHECK_NOTHROW(a.train.validate());

    CHECK(a.train.features == b.train.features);
    CHECK(a.train.labels == b.train.labels);
    CHECK(a.test.labels == b.test.labels);
    CHECK(a.train.features != c.train.features);
    CHECK(a.train.features != a.test.features);

    mg::Tensor x = a.train.x(), y = a.train.y();
    CHECK(x.shape() == mg::Shape{600, 20});
    CHECK(y.shape() == mg::Shape{600});
    CHECK(y.dtype() == mg::DType::Int64);
    CHECK(x.at({3, 7}) == a.train.features[3 * 20 + 7]);
}

TEST_CASE("dataset sentiment: the rule, the noise rate and the best reachable accuracy") {
    mg::Generator gen(11);
    SentimentConfig config{.label_noise = 0.08};
    SentimentData d = make_sentiment(30000, config, gen);
    CHECK(d.best_reachable_accuracy == doctest::Approx(1.0 - 0.08 * 2.0 / 3.0));
    // The clean label is the deterministic rule of the features, the sub-population is readable
    // from the context counts.
    for (int64_t i = 0; i < d.rows(); ++i) {
        const float* row = &d.features[(size_t)i * 20];
        REQUIRE(sentiment_clean_label(row) == d.clean_labels[i]);
        REQUIRE(sentiment_subpopulation(row) == d.subpopulations[i]);
    }
    // Labels differ from the clean ones at rate eta * 2/3 (a replacement can draw the same class).
    double changed = 1.0 - d.clean_label_fraction();
    CHECK(changed == doctest::Approx(0.08 * 2.0 / 3.0).epsilon(0.15));
    // Every class and every sub-population is well represented; sarcastic reviews are never positive.
    std::vector<int64_t> counts = d.class_counts();
    for (int64_t k = 0; k < 3; ++k) CHECK(counts[k] > 30000 / 5);
    std::vector<int64_t> per_sub(4, 0);
    for (int64_t s : d.subpopulations) per_sub[s]++;
    for (int64_t s = 0; s < 4; ++s) CHECK(per_sub[s] == doctest::Approx(7500).epsilon(0.05));
    for (int64_t i = 0; i < d.rows(); ++i)
        if (d.subpopulations[i] == 2) REQUIRE(d.clean_labels[i] != 0);

    // No noise: labels are the clean labels, the best accuracy is 1.
    mg::Generator gen0(11);
    SentimentData clean = make_sentiment(2000, {.label_noise = 0.0}, gen0);
    CHECK(clean.labels == clean.clean_labels);
    CHECK(clean.best_reachable_accuracy == 1.0);
    // The same seed gives the same reviews at any noise level.
    mg::Generator gen_noisy(11);
    CHECK(make_sentiment(2000, {.label_noise = 0.5}, gen_noisy).features == clean.features);

    CHECK_THROWS_AS(make_sentiment(10, {.label_noise = 1.5}, gen), std::invalid_argument);
    CHECK_THROWS_AS(make_sentiment(10, {.subpopulation_weights = {1, 2}}, gen), std::invalid_argument);
}

TEST_CASE("dataset sentiment: skewed sub-populations") {
    mg::Generator gen(3);
    SentimentData d = make_sentiment(20000, {.skew = true}, gen);
    std::vector<double> share(4, 0);
    for (int64_t s : d.subpopulations) share[s] += 1.0 / 20000;
    CHECK(share[0] == doctest::Approx(0.55).epsilon(0.05));
    CHECK(share[3] == doctest::Approx(0.05).epsilon(0.15));
    mg::Generator gen2(3);
    SentimentData only_plain = make_sentiment(500, {.subpopulation_weights = {1, 0, 0, 0}}, gen2);
    CHECK(std::all_of(only_plain.subpopulations.begin(), only_plain.subpopulations.end(),
                      [](int64_t s) { return s == 0; }));
}

TEST_CASE("dataset batches: one epoch covers every row once; shuffles differ by epoch") {
    mg::Generator gen(1);
    SentimentData d = make_sentiment(130, {}, gen);
    BatchIterator it(d, 32, gen);
    CHECK(it.batches_per_epoch() == 5);
    std::vector<int64_t> seen;
    int batches = 0;
    for (const Batch& b : it.epoch()) {
        ++batches;
        CHECK(b.x.shape()[1] == 20);
        CHECK(b.x.shape()[0] == (int64_t)b.indices.size());
        std::vector<int64_t> y = b.y.to_vector<int64_t>();
        for (size_t i = 0; i < b.indices.size(); ++i) CHECK(y[i] == d.labels[b.indices[i]]);
        seen.insert(seen.end(), b.indices.begin(), b.indices.end());
    }
    CHECK(batches == 5);
    CHECK(it.epochs_done() == 1);
    std::vector<int64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 130; ++i) CHECK(sorted[i] == i);
    CHECK(it.permutation(0) != it.permutation(1));
    CHECK(seen == it.permutation(0));

    BatchIterator no_shuffle(d, 64, gen, /*shuffle=*/false, /*drop_last=*/true);
    CHECK(no_shuffle.batches_per_epoch() == 2);
    Batch b;
    REQUIRE(no_shuffle.next(b));
    CHECK(b.indices.front() == 0);
    REQUIRE(no_shuffle.next(b));
    CHECK_FALSE(no_shuffle.next(b));  // 2 rows left: dropped
    CHECK(no_shuffle.epochs_done() == 1);
}

TEST_CASE("dataset batches: a restored state continues with the very next batch") {
    mg::Generator gen(9);
    SentimentData d = make_sentiment(100, {}, gen);
    mg::Generator gen_a(2), gen_b(77);
    BatchIterator a(d, 16, gen_a);
    Batch batch;
    for (int i = 0; i < 10; ++i)  // one epoch of 7 batches, the end of epoch signal, 2 more
        a.next(batch);
    BatchIterator::State saved = a.state();
    CHECK(saved.epoch == 1);
    CHECK(saved.position == 32);
    std::vector<std::vector<int64_t>> expected;
    for (int i = 0; i < 12; ++i) expected.push_back(a.next(batch) ? batch.indices : std::vector<int64_t>{});

    BatchIterator b(d, 16, gen_b);  // another seed, until the state is restored
    b.set_state(saved);
    for (int i = 0; i < 12; ++i) CHECK((b.next(batch) ? batch.indices : std::vector<int64_t>{}) == expected[i]);
    CHECK_THROWS_AS(b.set_state({saved.seed, 0, 101}), std::invalid_argument);
}

TEST_CASE("dataset helpers: standardizer and train/test split") {
    mg::Generator gen(4);
    SentimentData d = make_sentiment(1000, {}, gen);
    ClassificationData copy = d;
    Standardizer s = Standardizer::fit(copy);
    s.apply(copy);
    Standardizer after = Standardizer::fit(copy);
    for (int64_t c = 0; c < 20; ++c) {
        CHECK(after.mean[c] == doctest::Approx(0.0).epsilon(1e-4).scale(1.0));
        CHECK(after.stddev[c] == doctest::Approx(1.0).epsilon(1e-3));
    }
    auto [train, test] = train_test_split(d, 0.2, gen);
    CHECK(train.rows() == 800);
    CHECK(test.rows() == 200);
    CHECK(train.class_names == d.class_names);
}

TEST_CASE("dataset csv: loading numbers, names and integer labels") {
    std::string dir = temp_dir("ok");
    // Class names, numbered in order of first appearance; spaces, blank lines and CRLF are fine.
    std::string path = write(dir, "names.csv", "x1, x2 ,label\r\n1, 2.5, pos\r\n\r\n-3,4e-1,neg\r\n0,0,pos\r\n");
    ClassificationData d = load_csv_classification(path);
    CHECK(d.rows() == 3);
    CHECK(d.num_features == 2);
    CHECK(d.feature_names == std::vector<std::string>{"x1", "x2"});
    CHECK(d.class_names == std::vector<std::string>{"pos", "neg"});
    CHECK(d.labels == std::vector<int64_t>{0, 1, 0});
    CHECK(d.features == std::vector<float>{1, 2.5f, -3, 0.4f, 0, 0});

    // Integer labels are class ids; the label column may be anywhere when it is called "label".
    path = write(dir, "ids.csv", "label,a,b\n2,1,1\n0,2,2\n");
    d = load_csv_classification(path);
    CHECK(d.class_names == std::vector<std::string>{"0", "1", "2"});
    CHECK(d.labels == std::vector<int64_t>{2, 0});
    CHECK(d.features == std::vector<float>{1, 1, 2, 2});

    // No "label" column: the last column is the label. A given class list fixes the ids.
    path = write(dir, "last.csv", "a,b,sentiment\n1,2,neutral\n3,4,positive\n");
    d = load_csv_classification(path, {.class_names = {"positive", "negative", "neutral"}});
    CHECK(d.num_classes == 3);
    CHECK(d.labels == std::vector<int64_t>{2, 0});
    CHECK(d.feature_names == std::vector<std::string>{"a", "b"});

    // write_csv and back.
    mg::Generator gen(8);
    SentimentData s = make_sentiment(50, {}, gen);
    write_csv(dir + "/sentiment.csv", s);
    ClassificationData back = load_csv_classification(dir + "/sentiment.csv", {.class_names = s.class_names});
    CHECK(back.features == s.features);
    CHECK(back.labels == s.labels);
    CHECK(back.feature_names == s.feature_names);
    std::filesystem::remove_all(dir);
}

TEST_CASE("dataset csv: every error names the file, the line and the column") {
    std::string dir = temp_dir("errors");
    CHECK(csv_error(dir + "/missing.csv") == dir + "/missing.csv: no such file");
    std::string p = write(dir, "empty.csv", "\n\n");
    CHECK(csv_error(p) == p + ": the file is empty (expected a header line of column names)");
    p = write(dir, "header_only.csv", "a,b,label\n");
    CHECK(csv_error(p) == p + ": no data rows after the header");
    p = write(dir, "ragged.csv", "a,b,label\n1,2,0\n1,2\n");
    CHECK(csv_error(p) == p + ":3: 2 fields, the header has 3");
    p = write(dir, "ragged_long.csv", "a,b,label\n1,2,0,4\n");
    CHECK(csv_error(p) == p + ":2: 4 fields, the header has 3");
    p = write(dir, "nan.csv", "a,b,label\n1,2,0\n1,abc,1\n");
    CHECK(csv_error(p) == p + ":3, column 2 (b): 'abc' is not a number");
    p = write(dir, "blank_value.csv", "a,b,label\n1,,0\n");
    CHECK(csv_error(p) == p + ":2, column 2 (b): '' is not a number");
    p = write(dir, "unknown.csv", "a,label\n1,pos\n2,meh\n");
    CHECK(csv_error(p, {.class_names = {"pos", "neg"}}) == p + ":3, column 2 (label): unknown label 'meh' (classes: pos, neg)");
    CHECK(csv_error(p, {.class_names = {"pos", "neg", "meh"}}) == "(no error)");
    p = write(dir, "negative.csv", "a,label\n1,0\n2,-1\n");
    CHECK(csv_error(p) == p + ":3, column 2 (label): label -1 is negative (class ids are 0, 1, ...)");
    p = write(dir, "empty_label.csv", "a,label\n1,\n");
    CHECK(csv_error(p) == p + ":2, column 2 (label): the label is empty");
    p = write(dir, "one_column.csv", "label\n1\n");
    CHECK(csv_error(p) == p + ":1: the header has one column; need features and a label");
    std::filesystem::remove_all(dir);
}
