// demos/common/text.cpp: the byte tokenizer, the synthetic corpus, the
// corpus-folder loader, token streams, the window batchers and the n-gram floor (see text.h).
//
// The four grammars themselves live in text_grammars.cpp.
#include "demos/common/text.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace mg::demo {

// ---- tokenizer ------------------------------------------------------------------------------------

std::vector<int64_t> encode(const std::string& text) {
    std::vector<int64_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = (int64_t)(unsigned char)text[i];
    return ids;
}

std::string printable(const std::string& bytes) {
    std::string out;
    for (unsigned char c : bytes) out += (c == '\n' || (c >= 32 && c < 127)) ? (char)c : '?';
    return out;
}

std::string decode(const std::vector<int64_t>& ids) {
    std::string text(ids.size(), '\0');
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= kByteVocabSize)
            throw std::invalid_argument("decode: token " + std::to_string(ids[i]) + " at position " +
                                        std::to_string(i) + " is not a byte id in [0, 256)");
        text[i] = (char)(unsigned char)ids[i];
    }
    return text;
}

namespace {

// 0..n-1 in random order (a Fisher-Yates shuffle; the same draws as the grammars' Draw::sample).
std::vector<int64_t> random_order(Generator& gen, int64_t n) {
    std::vector<int64_t> order((size_t)n);
    std::iota(order.begin(), order.end(), 0);
    for (int64_t i = 0; i < n; ++i) std::swap(order[i], order[gen.randint(i, n)]);
    return order;
}

// Splits each domain's documents into train and validation by `validation_fraction` (at least
// one validation document when a domain has two or more and the fraction is positive), then
// shuffles each split so that domains interleave.
void split_documents(std::vector<std::vector<std::string>>& by_domain, double validation_fraction, Generator& gen,
                     TextCorpus& corpus) {
    if (!(validation_fraction >= 0 && validation_fraction < 1))
        throw std::invalid_argument("validation_fraction must be in [0, 1), got " + std::to_string(validation_fraction));
    for (size_t domain = 0; domain < by_domain.size(); ++domain) {
        std::vector<std::string>& docs = by_domain[domain];
        int64_t n = (int64_t)docs.size();
        int64_t n_validation = (int64_t)std::llround(validation_fraction * (double)n);
        if (validation_fraction > 0 && n >= 2) n_validation = std::max<int64_t>(n_validation, 1);
        n_validation = std::min(n_validation, n - 1);
        std::vector<int64_t> order = random_order(gen, n);
        for (int64_t i = 0; i < n; ++i) {
            auto& split = i < n_validation ? corpus.validation : corpus.train;
            split.push_back({std::move(docs[order[i]]), (int64_t)domain});
        }
    }
    for (auto* split : {&corpus.train, &corpus.validation}) {
        std::vector<int64_t> order = random_order(gen, (int64_t)split->size());
        std::vector<TextCorpus::Document> shuffled;
        shuffled.reserve(split->size());
        for (int64_t i : order) shuffled.push_back(std::move((*split)[i]));
        *split = std::move(shuffled);
    }
}

// A file's text cut at line boundaries into pieces of at most max_bytes (a piece closes once it
// holds half of max_bytes and the next line would overflow it; a longer line is cut anywhere).
std::vector<std::string> cut_into_documents(const std::string& text, int64_t max_bytes) {
    std::vector<std::string> pieces;
    std::string current;
    size_t begin = 0;
    auto flush = [&]() {
        if (current.find_first_not_of(" \t\r\n\f\v") != std::string::npos) pieces.push_back(current);
        current.clear();
    };
    while (begin < text.size()) {
        size_t end = text.find('\n', begin);
        end = end == std::string::npos ? text.size() : end + 1;
        std::string line = text.substr(begin, end - begin);
        begin = end;
        if ((int64_t)(current.size() + line.size()) > max_bytes && (int64_t)current.size() >= max_bytes / 2) flush();
        current += line;
        while ((int64_t)current.size() > max_bytes) {
            std::string rest = current.substr((size_t)max_bytes);
            current.resize((size_t)max_bytes);
            flush();
            current = rest;
        }
    }
    flush();
    return pieces;
}

}  // namespace

// ---- corpora --------------------------------------------------------------------------------------

std::vector<int64_t> TextCorpus::document_counts(const std::vector<Document>& split) const {
    std::vector<int64_t> counts((size_t)num_domains(), 0);
    for (const Document& doc : split)
        if (doc.domain >= 0 && doc.domain < num_domains()) counts[doc.domain]++;
    return counts;
}

void TextCorpus::validate(const std::string& what) const {
    for (const auto* split : {&train, &validation})
        for (const Document& doc : *split) {
            if (doc.domain < 0 || doc.domain >= num_domains())
                throw DataError(what + ": document domain " + std::to_string(doc.domain) + " is not in [0, " +
                                std::to_string(num_domains()) + ")");
            if (doc.text.empty()) throw DataError(what + ": an empty document");
        }
}

const std::vector<std::string>& synthetic_domain_names() {
    static const std::vector<std::string> names = {"finance", "legal", "code", "general"};
    return names;
}

TextCorpus make_synthetic_corpus(const SyntheticCorpusConfig& config, Generator& gen) {
    if (config.documents_per_domain < 1 || config.min_sentences < 1 || config.max_sentences < config.min_sentences)
        throw std::invalid_argument("make_synthetic_corpus: need documents_per_domain >= 1 and 1 <= min_sentences "
                                    "<= max_sentences, got " + std::to_string(config.documents_per_domain) + ", " +
                                    std::to_string(config.min_sentences) + ", " + std::to_string(config.max_sentences));
    TextCorpus corpus;
    corpus.domain_names = synthetic_domain_names();
    std::vector<std::vector<std::string>> by_domain(kSyntheticDomains);
    for (int64_t domain = 0; domain < kSyntheticDomains; ++domain)
        for (int64_t i = 0; i < config.documents_per_domain; ++i) {
            int64_t sentences = gen.randint(config.min_sentences, config.max_sentences + 1);
            by_domain[domain].push_back(synthetic_document(domain, sentences, gen));
        }
    split_documents(by_domain, config.validation_fraction, gen, corpus);
    return corpus;
}

std::string read_text_file(const std::string& path) {
    std::error_code error;
    if (!std::filesystem::exists(path, error)) throw DataError(path + ": no such file");
    if (std::filesystem::is_directory(path, error)) throw DataError(path + ": is a directory, expected a file");
    std::ifstream file(path, std::ios::binary);
    if (!file) throw DataError(path + ": cannot open the file (permissions?)");
    std::ostringstream text;
    text << file.rdbuf();
    if (file.bad()) throw DataError(path + ": read error");
    return text.str();
}

TextCorpus load_corpus_dir(const std::string& dir, double validation_fraction, Generator& gen,
                           int64_t max_document_bytes) {
    namespace fs = std::filesystem;
    if (max_document_bytes < 2)
        throw std::invalid_argument("load_corpus_dir: max_document_bytes = " + std::to_string(max_document_bytes));
    std::error_code error;
    if (!fs::exists(dir, error)) throw DataError(dir + ": no such directory");
    if (!fs::is_directory(dir, error)) throw DataError(dir + ": not a directory (expected one subfolder per domain)");

    std::vector<fs::path> subfolders;
    fs::directory_iterator it(dir, error);
    if (error) throw DataError(dir + ": cannot list the directory (" + error.message() + ")");
    for (const fs::directory_entry& entry : it)
        if (entry.is_directory(error)) subfolders.push_back(entry.path());
    if (subfolders.empty())
        throw DataError(dir + ": no subfolders; expected one subfolder of .txt files per domain, e.g. " + dir +
                        "/legal/*.txt");
    std::sort(subfolders.begin(), subfolders.end());

    TextCorpus corpus;
    std::vector<std::vector<std::string>> by_domain;
    for (const fs::path& folder : subfolders) {
        std::vector<fs::path> files;
        fs::directory_iterator files_it(folder, error);
        if (error) throw DataError(folder.string() + ": cannot list the directory (" + error.message() + ")");
        for (const fs::directory_entry& entry : files_it)
            if (entry.is_regular_file(error) && entry.path().extension() == ".txt") files.push_back(entry.path());
        std::sort(files.begin(), files.end());
        std::vector<std::string> documents;
        for (const fs::path& file : files)
            for (std::string& piece : cut_into_documents(read_text_file(file.string()), max_document_bytes))
                documents.push_back(std::move(piece));
        if (documents.empty())
            throw DataError(folder.string() + ": no .txt file with any text in it (domain '" +
                            folder.filename().string() + "')");
        corpus.domain_names.push_back(folder.filename().string());
        by_domain.push_back(std::move(documents));
    }
    split_documents(by_domain, validation_fraction, gen, corpus);
    return corpus;
}

TextCorpus load_text_file(const std::string& path, double validation_fraction, Generator& gen,
                          int64_t max_document_bytes) {
    if (max_document_bytes < 2)
        throw std::invalid_argument("load_text_file: max_document_bytes = " + std::to_string(max_document_bytes));
    std::vector<std::vector<std::string>> by_domain = {cut_into_documents(read_text_file(path), max_document_bytes)};
    if (by_domain[0].empty()) throw DataError(path + ": the file has no text");
    TextCorpus corpus;
    corpus.domain_names = {std::filesystem::path(path).stem().string()};
    split_documents(by_domain, validation_fraction, gen, corpus);
    return corpus;
}

// ---- token streams ----------------------------------------------------------------------------------

std::vector<int64_t> TokenStream::domain_counts() const {
    std::vector<int64_t> counts((size_t)std::max<int64_t>(num_domains, 1), 0);
    for (int64_t domain : domains)
        if (domain >= 0 && domain < (int64_t)counts.size()) counts[domain]++;
    return counts;
}

TokenStream token_stream(const std::vector<TextCorpus::Document>& documents, int64_t num_domains) {
    TokenStream stream;
    stream.num_domains = num_domains;
    for (const TextCorpus::Document& doc : documents) {
        if (doc.domain < 0 || doc.domain >= num_domains)
            throw std::invalid_argument("token_stream: document domain " + std::to_string(doc.domain) +
                                        " is not in [0, " + std::to_string(num_domains) + ")");
        for (unsigned char c : doc.text) stream.tokens.push_back(c);
        if (doc.text.empty() || doc.text.back() != '\n') stream.tokens.push_back('\n');
        stream.tokens.push_back('\n');   // a blank line between documents
        stream.domains.resize(stream.tokens.size(), doc.domain);
    }
    return stream;
}

TokenStream token_stream(const std::string& text, int64_t domain, int64_t num_domains) {
    if (domain < 0 || domain >= num_domains)
        throw std::invalid_argument("token_stream: domain " + std::to_string(domain) + " is not in [0, " +
                                    std::to_string(num_domains) + ")");
    TokenStream stream;
    stream.num_domains = num_domains;
    stream.tokens = encode(text);
    stream.domains.assign(stream.tokens.size(), domain);
    return stream;
}

TokenStream peer_text_stream(const std::string& text) {
    TokenStream stream = token_stream(text, 0, kSyntheticDomains);
    size_t begin = 0;
    while (begin < text.size()) {
        size_t end = text.find('\n', begin);
        end = end == std::string::npos ? text.size() : end + 1;
        int64_t domain = text.compare(begin, 3, "On ") == 0        ? 0
                         : text.compare(begin, 8, "Section ") == 0 ? 1
                         : text.compare(begin, 4, "The ") == 0     ? 3
                                                                   : 2;
        std::fill(stream.domains.begin() + (int64_t)begin, stream.domains.begin() + (int64_t)end, domain);
        begin = end;
    }
    return stream;
}

// ---- batches ----------------------------------------------------------------------------------------
namespace {
// input = tokens[s, s+T), target = tokens[s+1, s+T+1), domains of the inputs, for each start s.
TextBatch gather_windows(const TokenStream& stream, const std::vector<int64_t>& starts, int64_t seq, Device device) {
    const int64_t b = (int64_t)starts.size();
    std::vector<int64_t> input((size_t)(b * seq)), target((size_t)(b * seq)), domains((size_t)(b * seq));
    for (int64_t row = 0; row < b; ++row) {
        const int64_t s = starts[row];
        std::copy_n(stream.tokens.begin() + s, seq, input.begin() + row * seq);
        std::copy_n(stream.tokens.begin() + s + 1, seq, target.begin() + row * seq);
        std::copy_n(stream.domains.begin() + s, seq, domains.begin() + row * seq);
    }
    TextBatch batch;
    batch.input = Tensor::from_vector(input, {b, seq}, device);
    batch.target = Tensor::from_vector(target, {b, seq}, device);
    batch.domains = Tensor::from_vector(domains, {b, seq}, device);
    batch.starts = starts;
    return batch;
}
void check_windows(const char* who, const TokenStream& stream, int64_t batch, int64_t seq) {
    if (batch <= 0 || seq <= 0)
        throw std::invalid_argument(std::string(who) + ": batch and seq must be > 0, got " + std::to_string(batch) +
                                    ", " + std::to_string(seq));
    if (stream.size() < seq + 1)
        throw std::invalid_argument(std::string(who) + ": the stream has " + std::to_string(stream.size()) +
                                    " tokens, fewer than seq + 1 = " + std::to_string(seq + 1));
    if (stream.domains.size() != stream.tokens.size())
        throw std::invalid_argument(std::string(who) + ": the stream has " + std::to_string(stream.tokens.size()) +
                                    " tokens but " + std::to_string(stream.domains.size()) + " domain labels");
}
}  // namespace

WindowBatcher::WindowBatcher(const TokenStream& stream, int64_t batch, int64_t seq, Generator& gen, Device device)
    : stream_(&stream), batch_(batch), seq_(seq), device_(device) {
    check_windows("WindowBatcher", stream, batch, seq);
    uint64_t high = gen.next_u32(), low = gen.next_u32();
    state_.seed = (high << 32) | low;
}

std::vector<int64_t> WindowBatcher::starts(int64_t step) const {
    // Batch n uses the counters from n * 2^32 on: batches never share random bits.
    Generator gen(state_.seed);
    gen.set_state({state_.seed, (uint64_t)step << 32});
    std::vector<int64_t> out((size_t)batch_);
    for (int64_t& s : out) s = gen.randint(0, stream_->size() - seq_);
    return out;
}

TextBatch WindowBatcher::next() {
    TextBatch batch = gather_windows(*stream_, starts(state_.step), seq_, device_);
    state_.step++;
    return batch;
}

void WindowBatcher::set_state(const State& state) {
    if (state.step < 0) throw std::invalid_argument("WindowBatcher::set_state: step " + std::to_string(state.step));
    state_ = state;
}

EvalWindows::EvalWindows(const TokenStream& stream, int64_t batch, int64_t seq, int64_t max_batches, Device device)
    : stream_(&stream), batch_(batch), seq_(seq), device_(device) {
    check_windows("EvalWindows", stream, batch, seq);
    windows_ = (stream.size() - 1) / seq;   // window w needs tokens up to w*T + T
    if (max_batches > 0) windows_ = std::min(windows_, max_batches * batch);
}

bool EvalWindows::next(TextBatch& batch) {
    if (position_ >= windows_) return false;
    int64_t b = std::min(batch_, windows_ - position_);
    std::vector<int64_t> starts((size_t)b);
    for (int64_t i = 0; i < b; ++i) starts[i] = (position_ + i) * seq_;
    batch = gather_windows(*stream_, starts, seq_, device_);
    position_ += b;
    return true;
}

// ---- the n-gram floor -------------------------------------------------------------------------------
namespace {
struct BigramTable {
    std::vector<double> pair_counts = std::vector<double>(kByteVocabSize * kByteVocabSize, 0.0);   // (256, 256)
    std::vector<double> row_counts = std::vector<double>(kByteVocabSize, 0.0);                     // (256)
};
BigramTable fit_bigram(const TokenStream& train) {
    BigramTable table;
    for (int64_t i = 1; i < train.size(); ++i) {
        table.pair_counts[train.tokens[i - 1] * kByteVocabSize + train.tokens[i]] += 1;
        table.row_counts[train.tokens[i - 1]] += 1;
    }
    return table;
}
void check_ngram_inputs(const char* who, const TokenStream& validation, double add_k) {
    if (!(add_k > 0)) throw std::invalid_argument(std::string(who) + ": add_k must be > 0, got " + std::to_string(add_k));
    if (validation.size() < 2)
        throw std::invalid_argument(std::string(who) + ": the validation stream needs at least 2 tokens");
}
}  // namespace

double bigram_perplexity(const TokenStream& train, const TokenStream& validation, double add_k) {
    check_ngram_inputs("bigram_perplexity", validation, add_k);
    BigramTable table = fit_bigram(train);
    double nll = 0;
    for (int64_t i = 1; i < validation.size(); ++i) {
        int64_t a = validation.tokens[i - 1], b = validation.tokens[i];
        nll -= std::log((table.pair_counts[a * kByteVocabSize + b] + add_k) / (table.row_counts[a] + kByteVocabSize * add_k));
    }
    return std::exp(nll / (double)(validation.size() - 1));
}

double unigram_perplexity(const TokenStream& train, const TokenStream& validation, double add_k) {
    check_ngram_inputs("unigram_perplexity", validation, add_k);
    std::vector<double> counts(kByteVocabSize, 0.0);
    for (int64_t t : train.tokens) counts[t] += 1;
    const double total = (double)train.size() + kByteVocabSize * add_k;
    double nll = 0;
    for (int64_t i = 1; i < validation.size(); ++i) nll -= std::log((counts[validation.tokens[i]] + add_k) / total);
    return std::exp(nll / (double)(validation.size() - 1));
}

std::vector<double> bigram_perplexity_by_domain(const TokenStream& train, const TokenStream& validation,
                                                double add_k) {
    check_ngram_inputs("bigram_perplexity_by_domain", validation, add_k);
    BigramTable table = fit_bigram(train);
    const int64_t domains = std::max<int64_t>(validation.num_domains, 1);
    std::vector<double> nll((size_t)domains, 0.0), count((size_t)domains, 0.0);
    for (int64_t i = 1; i < validation.size(); ++i) {
        int64_t a = validation.tokens[i - 1], b = validation.tokens[i], domain = validation.domains[i];
        if (domain < 0 || domain >= domains) continue;
        nll[domain] -= std::log((table.pair_counts[a * kByteVocabSize + b] + add_k) / (table.row_counts[a] + kByteVocabSize * add_k));
        count[domain] += 1;
    }
    std::vector<double> out((size_t)domains, 0.0);
    for (int64_t dm = 0; dm < domains; ++dm) out[dm] = count[dm] > 0 ? std::exp(nll[dm] / count[dm]) : 0.0;
    return out;
}

}  // namespace mg::demo
