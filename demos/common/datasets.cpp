// demos/common/datasets.cpp: the sentiment generator, the CSV loader and the batch iterator
// (see datasets.h).
#include "demos/common/datasets.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "demos/common/report.h"

namespace mg::demo {

// ---- ClassificationData --------------------------------------------------------------------------

Tensor ClassificationData::x(Device device) const {
    return Tensor::from_vector(features, {rows(), num_features}, device);
}

Tensor ClassificationData::y(Device device) const { return Tensor::from_vector(labels, {rows()}, device); }

ClassificationData ClassificationData::subset(const std::vector<int64_t>& indices) const {
    ClassificationData out;
    out.num_features = num_features;
    out.num_classes = num_classes;
    out.feature_names = feature_names;
    out.class_names = class_names;
    out.features.reserve(indices.size() * (size_t)num_features);
    out.labels.reserve(indices.size());
    for (int64_t i : indices) {
        if (i < 0 || i >= rows())
            throw std::out_of_range("ClassificationData::subset: row " + std::to_string(i) + " of " +
                                    std::to_string(rows()));
        out.features.insert(out.features.end(), features.begin() + i * num_features,
                            features.begin() + (i + 1) * num_features);
        out.labels.push_back(labels[i]);
    }
    return out;
}

std::vector<int64_t> ClassificationData::class_counts() const {
    std::vector<int64_t> counts((size_t)std::max<int64_t>(num_classes, 0), 0);
    for (int64_t label : labels)
        if (label >= 0 && label < num_classes) counts[label]++;
    return counts;
}

void ClassificationData::validate(const std::string& what) const {
    if ((int64_t)features.size() != rows() * num_features)
        throw DataError(what + ": " + std::to_string(features.size()) + " feature values for " +
                        std::to_string(rows()) + " rows of " + std::to_string(num_features));
    if ((int64_t)feature_names.size() != num_features || (int64_t)class_names.size() != num_classes)
        throw DataError(what + ": the names do not match num_features / num_classes");
    for (int64_t i = 0; i < rows(); ++i)
        if (labels[i] < 0 || labels[i] >= num_classes)
            throw DataError(what + ": label " + std::to_string(labels[i]) + " of row " + std::to_string(i) +
                            " is not in [0, " + std::to_string(num_classes) + ")");
}

// ---- the sentiment data ---------------------------------------------------------------------------
//
// Feature layout (word counts of one review):
//   0-5   everyday positive words   6-11  everyday negative words
//   12-13 domain positive words     14-15 domain negative words
//   16    "not"                     17    "yeah right"        18 technical terms
//   19    "the" (review length: noise)
namespace {

const char* const kFeatureNames[kSentimentFeatures] = {
    "good", "great", "love", "excellent", "fun", "best",
    "bad", "awful", "hate", "boring", "worst", "poor",
    "smooth", "fast", "lag", "crash",
    "not", "yeah_right", "tech_terms", "the"};

enum Subpopulation : int64_t { kPlain = 0, kNegated = 1, kSarcastic = 2, kTechnical = 3 };
enum Class : int64_t { kPositive = 0, kNegative = 1, kNeutral = 2 };

// A Poisson draw by Knuth's product of uniforms: fine for the small rates used here.
int64_t poisson(double rate, Generator& gen) {
    double limit = std::exp(-rate), product = gen.uniform();
    int64_t k = 0;
    while (product > limit) {
        ++k;
        product *= gen.uniform();
    }
    return k;
}

// The tone a review is written in sets the rates of its positive and negative words; the label
// then follows from the counts by the rule of its sub-population, so the tone is only a way to
// spread the counts over the interesting range (it is not the label).
struct ToneRates { double positive, negative; };
// Upbeat reviews are the most common, because the rules turn positive words into other classes
// in two sub-populations; these rates give about 26% positive, 40% negative, 34% neutral.
constexpr ToneRates kToneRates[3] = {{3.5, 0.5}, {0.5, 3.5}, {1.4, 1.4}};  // upbeat, downbeat, mixed
constexpr double kToneProbability[3] = {0.45, 0.30, 0.25};

// Threshold rule shared by the sub-populations: score >= 2 -> high, <= -2 -> low, else neutral.
int64_t by_score(int64_t score, int64_t high, int64_t low) {
    return score >= 2 ? high : score <= -2 ? low : kNeutral;
}

}  // namespace

int64_t sentiment_subpopulation(const float* row) {
    if (row[16] > 0) return kNegated;
    if (row[17] > 0) return kSarcastic;
    if (row[18] > 0) return kTechnical;
    return kPlain;
}

int64_t sentiment_clean_label(const float* row) {
    auto count = [&](int first, int last) {  // sum of row[first..last]
        double s = 0;
        for (int i = first; i <= last; ++i) s += row[i];
        return (int64_t)std::llround(s);
    };
    int64_t everyday = count(0, 5) - count(6, 11);   // d
    int64_t domain = count(12, 13) - count(14, 15);  // j
    switch (sentiment_subpopulation(row)) {
        case kPlain: return by_score(everyday, kPositive, kNegative);
        case kNegated: return by_score(everyday, kNegative, kPositive);
        case kSarcastic: return std::abs(everyday) >= 2 ? kNegative : kNeutral;
        default: return by_score(domain, kPositive, kNegative);
    }
}

double SentimentData::clean_label_fraction() const {
    if (labels.empty()) return 1.0;
    int64_t same = 0;
    for (size_t i = 0; i < labels.size(); ++i) same += labels[i] == clean_labels[i];
    return (double)same / (double)labels.size();
}

SentimentData make_sentiment(int64_t samples, const SentimentConfig& config, Generator& gen) {
    if (samples < 0) throw std::invalid_argument("make_sentiment: samples = " + std::to_string(samples));
    if (!(config.label_noise >= 0 && config.label_noise <= 1))
        throw std::invalid_argument("make_sentiment: label_noise must be in [0, 1], got " +
                                    std::to_string(config.label_noise));
    std::vector<double> weights = config.subpopulation_weights;
    if (weights.empty()) weights = config.skew ? std::vector<double>{0.55, 0.25, 0.15, 0.05}
                                               : std::vector<double>{0.25, 0.25, 0.25, 0.25};
    double total_weight = 0;
    for (double w : weights) total_weight += w;
    if (weights.size() != (size_t)kSentimentSubpopulations || total_weight <= 0 ||
        std::any_of(weights.begin(), weights.end(), [](double w) { return !(w >= 0); }))
        throw std::invalid_argument("make_sentiment: subpopulation_weights needs 4 weights >= 0, not all 0");

    SentimentData data;
    data.num_features = kSentimentFeatures;
    data.num_classes = kSentimentClasses;
    data.feature_names.assign(kFeatureNames, kFeatureNames + kSentimentFeatures);
    data.class_names = {"positive", "negative", "neutral"};
    data.subpopulation_names = {"plain", "negated", "sarcastic", "technical"};
    data.label_noise = config.label_noise;
    data.best_reachable_accuracy = 1.0 - config.label_noise * (double)(kSentimentClasses - 1) / kSentimentClasses;
    data.features.assign((size_t)(samples * kSentimentFeatures), 0.0f);
    data.labels.resize((size_t)samples);
    data.clean_labels.resize((size_t)samples);
    data.subpopulations.resize((size_t)samples);

    for (int64_t i = 0; i < samples; ++i) {
        float* row = &data.features[(size_t)(i * kSentimentFeatures)];
        // Sub-population by its weight, then the tone of the review.
        double u = gen.uniform() * total_weight;
        int64_t sub = 0;
        while (sub < kSentimentSubpopulations - 1 && u >= weights[sub]) u -= weights[sub++];
        double t = gen.uniform();
        const ToneRates& tone = kToneRates[t < kToneProbability[0] ? 0 : t < kToneProbability[0] + kToneProbability[1] ? 1 : 2];
        if (sub == kTechnical) {
            // Everyday words appear at a low rate whatever the tone; the domain words carry it.
            for (int w = 0; w < 12; ++w) row[w] = (float)poisson(1.2 / 6, gen);
            for (int w = 12; w < 14; ++w) row[w] = (float)poisson(tone.positive / 2, gen);
            for (int w = 14; w < 16; ++w) row[w] = (float)poisson(tone.negative / 2, gen);
            row[18] = (float)(1 + poisson(0.7, gen));
        } else {
            for (int w = 0; w < 6; ++w) row[w] = (float)poisson(tone.positive / 6, gen);
            for (int w = 6; w < 12; ++w) row[w] = (float)poisson(tone.negative / 6, gen);
            for (int w = 12; w < 16; ++w) row[w] = (float)poisson(0.25, gen);  // domain words as noise
            if (sub == kNegated) row[16] = (float)(1 + poisson(0.5, gen));
            if (sub == kSarcastic) row[17] = (float)(1 + poisson(0.5, gen));
        }
        row[19] = (float)poisson(3.0, gen);

        int64_t clean = sentiment_clean_label(row);
        int64_t label = clean;
        // Label noise: always two draws per row, so the features of row i do not depend on the
        // noise rate (the same seed gives the same reviews at any noise level).
        double noise_draw = gen.uniform();
        int64_t random_class = gen.randint(0, kSentimentClasses);
        if (noise_draw < config.label_noise) label = random_class;
        data.subpopulations[i] = sub;
        data.clean_labels[i] = clean;
        data.labels[i] = label;
    }
    return data;
}

SentimentSplits sentiment_dataset(const SentimentConfig& config, Generator& gen) {
    SentimentSplits splits;
    splits.train = make_sentiment(config.train, config, gen);
    splits.test = make_sentiment(config.test, config, gen);
    return splits;
}

// ---- CSV ------------------------------------------------------------------------------------------
namespace {

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::vector<std::string> split_fields(const std::string& line) {
    std::vector<std::string> fields;
    std::string field;
    std::istringstream is(line);
    while (std::getline(is, field, ',')) fields.push_back(trim(field));
    if (!line.empty() && line.back() == ',') fields.push_back("");  // a trailing empty field
    return fields;
}

bool parse_int(const std::string& s, int64_t& out) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

bool parse_float(const std::string& s, float& out) {
    const char* begin = s.data() + (!s.empty() && s[0] == '+' ? 1 : 0);
    auto [end, ec] = std::from_chars(begin, s.data() + s.size(), out);
    return begin != s.data() + s.size() && ec == std::errc() && end == s.data() + s.size() && std::isfinite(out);
}

}  // namespace

ClassificationData load_csv_classification(const std::string& path, const CsvOptions& options) {
    if (!std::filesystem::exists(path)) throw DataError(path + ": no such file");
    std::ifstream file(path);
    if (!file) throw DataError(path + ": cannot open the file");

    std::string line;
    int64_t line_number = 0;
    std::vector<std::string> header;
    while (std::getline(file, line)) {
        ++line_number;
        if (!trim(line).empty()) {
            header = split_fields(trim(line));
            break;
        }
    }
    if (header.empty()) throw DataError(path + ": the file is empty (expected a header line of column names)");
    if (header.size() < 2) throw DataError(path + ":" + std::to_string(line_number) +
                                           ": the header has one column; need features and a label");
    for (size_t c = 0; c < header.size(); ++c)
        if (header[c].empty())
            throw DataError(path + ":" + std::to_string(line_number) + ": column " + std::to_string(c + 1) +
                            " of the header has no name");
    size_t label_col = header.size() - 1;
    for (size_t c = 0; c < header.size(); ++c)
        if (header[c] == options.label_column) label_col = c;

    ClassificationData data;
    for (size_t c = 0; c < header.size(); ++c)
        if (c != label_col) data.feature_names.push_back(header[c]);
    data.num_features = (int64_t)data.feature_names.size();

    std::vector<std::string> label_texts;
    std::vector<int64_t> label_lines;
    while (std::getline(file, line)) {
        ++line_number;
        if (trim(line).empty()) continue;
        std::vector<std::string> fields = split_fields(trim(line));
        const std::string where = path + ":" + std::to_string(line_number);
        if (fields.size() != header.size())
            throw DataError(where + ": " + std::to_string(fields.size()) + " fields, the header has " +
                            std::to_string(header.size()));
        for (size_t c = 0; c < fields.size(); ++c) {
            if (c == label_col) continue;
            float v = 0;
            if (!parse_float(fields[c], v))
                throw DataError(where + ", column " + std::to_string(c + 1) + " (" + header[c] + "): '" +
                                fields[c] + "' is not a number");
            data.features.push_back(v);
        }
        if (fields[label_col].empty())
            throw DataError(where + ", column " + std::to_string(label_col + 1) + " (" + header[label_col] +
                            "): the label is empty");
        label_texts.push_back(fields[label_col]);
        label_lines.push_back(line_number);
    }
    if (label_texts.empty()) throw DataError(path + ": no data rows after the header");

    // Labels to class ids.
    auto label_error = [&](size_t row, const std::string& why) {
        return DataError(path + ":" + std::to_string(label_lines[row]) + ", column " +
                         std::to_string(label_col + 1) + " (" + header[label_col] + "): " + why);
    };
    if (!options.class_names.empty()) {
        data.class_names = options.class_names;
        std::string known;
        for (size_t k = 0; k < data.class_names.size(); ++k) known += (k ? ", " : "") + data.class_names[k];
        for (size_t r = 0; r < label_texts.size(); ++r) {
            auto found = std::find(data.class_names.begin(), data.class_names.end(), label_texts[r]);
            int64_t id = 0;
            if (found != data.class_names.end()) id = found - data.class_names.begin();
            else if (!parse_int(label_texts[r], id) || id < 0 || id >= (int64_t)data.class_names.size())
                throw label_error(r, "unknown label '" + label_texts[r] + "' (classes: " + known + ")");
            data.labels.push_back(id);
        }
    } else {
        bool all_integers = true;
        for (const std::string& t : label_texts) {
            int64_t v = 0;
            all_integers = all_integers && parse_int(t, v);
        }
        if (all_integers) {
            int64_t max_id = 0;
            for (size_t r = 0; r < label_texts.size(); ++r) {
                int64_t id = 0;
                parse_int(label_texts[r], id);
                if (id < 0) throw label_error(r, "label " + label_texts[r] + " is negative (class ids are 0, 1, ...)");
                max_id = std::max(max_id, id);
                data.labels.push_back(id);
            }
            for (int64_t k = 0; k <= max_id; ++k) data.class_names.push_back(std::to_string(k));
        } else {
            for (const std::string& t : label_texts) {
                auto found = std::find(data.class_names.begin(), data.class_names.end(), t);
                if (found == data.class_names.end()) {
                    data.class_names.push_back(t);
                    found = data.class_names.end() - 1;
                }
                data.labels.push_back(found - data.class_names.begin());
            }
        }
    }
    data.num_classes = (int64_t)data.class_names.size();
    data.validate(path);
    return data;
}

void write_csv(const std::string& path, const ClassificationData& data) {
    data.validate("write_csv(" + path + ")");
    std::ostringstream os;
    for (const std::string& name : data.feature_names) os << name << ",";
    os << "label\n";
    char buf[32];
    for (int64_t r = 0; r < data.rows(); ++r) {
        for (int64_t c = 0; c < data.num_features; ++c) {
            auto result = std::to_chars(buf, buf + sizeof buf, data.features[(size_t)(r * data.num_features + c)]);
            os.write(buf, result.ptr - buf);
            os << ",";
        }
        os << data.class_names[(size_t)data.labels[(size_t)r]] << "\n";
    }
    write_text_file(path, os.str());
}

// ---- preparing features ---------------------------------------------------------------------------

Standardizer Standardizer::fit(const ClassificationData& train) {
    Standardizer s;
    const int64_t n = train.rows(), d = train.num_features;
    std::vector<double> sum((size_t)d, 0.0), sum_sq((size_t)d, 0.0);
    for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < d; ++c) {
            double v = train.features[(size_t)(r * d + c)];
            sum[c] += v;
            sum_sq[c] += v * v;
        }
    for (int64_t c = 0; c < d; ++c) {
        double mean = n ? sum[c] / n : 0.0;
        double var = n ? std::max(0.0, sum_sq[c] / n - mean * mean) : 0.0;
        double sd = std::sqrt(var);
        s.mean.push_back((float)mean);
        s.stddev.push_back(sd > 1e-12 ? (float)sd : 1.0f);
    }
    return s;
}

void Standardizer::apply(ClassificationData& data) const {
    if ((int64_t)mean.size() != data.num_features)
        throw std::invalid_argument("Standardizer::apply: fitted on " + std::to_string(mean.size()) +
                                    " features, the data has " + std::to_string(data.num_features));
    for (int64_t r = 0; r < data.rows(); ++r)
        for (int64_t c = 0; c < data.num_features; ++c) {
            float& v = data.features[(size_t)(r * data.num_features + c)];
            v = (v - mean[c]) / stddev[c];
        }
}

namespace {
// Fisher-Yates with the generator: the same (seed, offset) gives the same order everywhere.
std::vector<int64_t> shuffled_indices(int64_t n, Generator& gen) {
    std::vector<int64_t> order((size_t)n);
    std::iota(order.begin(), order.end(), 0);
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[gen.randint(0, i + 1)]);
    return order;
}
}  // namespace

std::pair<ClassificationData, ClassificationData> train_test_split(const ClassificationData& data,
                                                                   double test_fraction, Generator& gen) {
    if (!(test_fraction >= 0 && test_fraction <= 1))
        throw std::invalid_argument("train_test_split: test_fraction must be in [0, 1], got " +
                                    std::to_string(test_fraction));
    std::vector<int64_t> order = shuffled_indices(data.rows(), gen);
    int64_t n_test = (int64_t)std::llround(test_fraction * (double)data.rows());
    std::vector<int64_t> first(order.begin(), order.end() - n_test), second(order.end() - n_test, order.end());
    return {data.subset(first), data.subset(second)};
}

// ---- BatchIterator --------------------------------------------------------------------------------

BatchIterator::BatchIterator(const ClassificationData& data, int64_t batch_size, Generator& gen, bool shuffle,
                             bool drop_last, Device device)
    : data_(&data), batch_size_(batch_size), shuffle_(shuffle), drop_last_(drop_last), device_(device) {
    if (batch_size <= 0)
        throw std::invalid_argument("BatchIterator: batch_size must be > 0, got " + std::to_string(batch_size));
    if (data.rows() == 0) throw std::invalid_argument("BatchIterator: the data set is empty");
    // One draw: 64 bits of seed for the shuffles of every epoch.
    uint64_t high = gen.next_u32(), low = gen.next_u32();
    state_.seed = (high << 32) | low;
}

int64_t BatchIterator::batches_per_epoch() const {
    int64_t n = data_->rows();
    return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
}

std::vector<int64_t> BatchIterator::permutation(int64_t epoch) const {
    if (!shuffle_) {
        std::vector<int64_t> order((size_t)data_->rows());
        std::iota(order.begin(), order.end(), 0);
        return order;
    }
    // Epoch e uses the counters from e * 2^32 on: far apart, so epochs never share random bits.
    Generator gen(state_.seed);
    gen.set_state({state_.seed, (uint64_t)epoch << 32});
    return shuffled_indices(data_->rows(), gen);
}

void BatchIterator::set_state(const State& state) {
    if (state.epoch < 0 || state.position < 0 || state.position > data_->rows())
        throw std::invalid_argument("BatchIterator::set_state: epoch " + std::to_string(state.epoch) +
                                    ", position " + std::to_string(state.position) + " for " +
                                    std::to_string(data_->rows()) + " rows");
    state_ = state;
    order_epoch_ = -1;
}

bool BatchIterator::next(Batch& batch) {
    const int64_t n = data_->rows(), d = data_->num_features;
    int64_t remaining = n - state_.position;
    if (remaining <= 0 || (drop_last_ && remaining < batch_size_)) {
        state_.epoch++;
        state_.position = 0;
        return false;
    }
    if (order_epoch_ != state_.epoch) {
        order_ = permutation(state_.epoch);
        order_epoch_ = state_.epoch;
    }
    int64_t b = std::min(batch_size_, remaining);
    batch.indices.assign(order_.begin() + state_.position, order_.begin() + state_.position + b);
    std::vector<float> x((size_t)(b * d));
    std::vector<int64_t> y((size_t)b);
    for (int64_t i = 0; i < b; ++i) {
        int64_t row = batch.indices[i];
        std::copy_n(data_->features.begin() + row * d, d, x.begin() + i * d);
        y[i] = data_->labels[row];
    }
    batch.x = Tensor::from_vector(x, {b, d}, device_);
    batch.y = Tensor::from_vector(y, {b}, device_);
    state_.position += b;
    return true;
}

}  // namespace mg::demo
