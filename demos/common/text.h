// demos/common/text.h: text data for the language-model demos (03, 05): a byte-level tokenizer,
// a seeded synthetic corpus in four domains, a loader for a folder of real text, token streams
// that keep a domain label per token, a window batcher, and the bigram floor.
//
// Text lives on the host as plain strings and vectors and becomes mg::Tensor only per batch, as
// in datasets.h. Every random draw comes from an mg::Generator (Philox), so a seed gives the same
// corpus, split and batches on every machine.
//
//   mg::Generator gen(seed);
//   mg::demo::TextCorpus corpus = mg::demo::make_synthetic_corpus({}, gen);   // or load_corpus_dir
//   mg::demo::TokenStream train = mg::demo::token_stream(corpus.train);
//   mg::demo::TokenStream valid = mg::demo::token_stream(corpus.validation);
//   double floor = mg::demo::bigram_perplexity(train, valid);                 // any model must beat it
//   mg::demo::WindowBatcher batches(train, /*batch=*/16, /*seq=*/128, gen);
//   for (int64_t step = 0; step < steps; ++step) {
//       mg::demo::TextBatch b = batches.next();     // b.input, b.target, b.domains: (B, T) int64
//       ...
//   }
//   mg::demo::EvalWindows eval(valid, 16, 128);     // the same windows for every model
//   for (mg::demo::TextBatch b; eval.next(b);) ...
//
// The grammars, the split, the batcher and the bigram formula are described in
// docs/demos/text_data.md. Errors about files throw DataError (datasets.h) naming the path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "demos/common/datasets.h"
#include "engine/device.h"
#include "engine/random.h"
#include "engine/tensor.h"

namespace mg::demo {

// ---- byte-level tokenizer ------------------------------------------------------------------------
//
// One token per byte: ids 0..255, so any byte string (UTF-8 or not) round-trips exactly.
inline constexpr int64_t kByteVocabSize = 256;
std::vector<int64_t> encode(const std::string& text);
// Throws std::invalid_argument for an id outside [0, 256).
std::string decode(const std::vector<int64_t>& ids);
// Bytes as a reader can see them in a terminal or a Markdown code block: newlines and printable
// ASCII kept, every other byte shown as '?' (generated samples).
std::string printable(const std::string& bytes);

// ---- corpora ------------------------------------------------------------------------------------
struct TextCorpus {
    struct Document {
        std::string text;
        int64_t domain = 0;   // index into domain_names
    };
    std::vector<std::string> domain_names;
    std::vector<Document> train, validation;

    int64_t num_domains() const { return (int64_t)domain_names.size(); }
    // Documents per domain in one split.
    std::vector<int64_t> document_counts(const std::vector<Document>& split) const;
    // Throws DataError when a document's domain is out of range or a document is empty.
    void validate(const std::string& what = "TextCorpus") const;
};

// The synthetic corpus: finance, legal, code, general (domains 0..3, in that order). Each
// document is one short text of `min_sentences`..`max_sentences` units (sentences, clauses or
// top-level code items) from that domain's grammar; see docs/demos/text_data.md.
struct SyntheticCorpusConfig {
    int64_t documents_per_domain = 1000;
    int64_t min_sentences = 3;
    int64_t max_sentences = 8;
    double validation_fraction = 0.1;   // of each domain's documents, drawn at random
};
inline constexpr int64_t kSyntheticDomains = 4;
const std::vector<std::string>& synthetic_domain_names();   // {"finance", "legal", "code", "general"}

TextCorpus make_synthetic_corpus(const SyntheticCorpusConfig& config, Generator& gen);
inline TextCorpus make_synthetic_corpus(Generator& gen) { return make_synthetic_corpus({}, gen); }
// One document of one domain with `sentences` units (for docs, tests and curious learners).
std::string synthetic_document(int64_t domain, int64_t sentences, Generator& gen);

// `--corpus DIR`: every immediate subfolder of `dir` is a domain (sorted by name), every regular
// .txt file in it a document. A file over `max_document_bytes` is cut at line boundaries into
// documents of about half to all of that size, so that a few large files still give enough
// documents to split. validation_fraction of each domain's documents go to validation (at least
// one when the domain has two or more). Throws DataError naming the path when `dir` is missing
// or not a directory, has no subfolders, a subfolder has no non-empty .txt file, or a file
// cannot be read.
TextCorpus load_corpus_dir(const std::string& dir, double validation_fraction, Generator& gen,
                           int64_t max_document_bytes = 4096);
// One file as one domain (named after the file's stem), cut and split like load_corpus_dir.
TextCorpus load_text_file(const std::string& path, double validation_fraction, Generator& gen,
                          int64_t max_document_bytes = 4096);
// The exact bytes of a file (DataError naming the path when missing, a directory or unreadable).
// With token_stream(text) below this feeds a corpus dumped by another program byte for byte,
// e.g. the PyTorch peer's gen_text.py (docs/demos/text_data.md, "The peer corpus").
std::string read_text_file(const std::string& path);

// ---- token streams ------------------------------------------------------------------------------
//
// The training view of a split: all documents joined into one stream of byte ids, each token
// carrying the domain of the document it came from. Each document is followed by a blank line
// ("\n" to end its last line when missing, then one more "\n"), labelled with its domain, so a
// model sees where documents end.
struct TokenStream {
    std::vector<int64_t> tokens;    // (N) byte ids in [0, 256)
    std::vector<int64_t> domains;   // (N) domain of each token
    int64_t num_domains = 1;

    int64_t size() const { return (int64_t)tokens.size(); }
    // Tokens per domain.
    std::vector<int64_t> domain_counts() const;
};
TokenStream token_stream(const std::vector<TextCorpus::Document>& documents, int64_t num_domains);
inline TokenStream token_stream(const TextCorpus& corpus, const std::vector<TextCorpus::Document>& split) {
    return token_stream(split, corpus.num_domains());
}
// Raw text as it is (no separators added), every token labelled `domain`.
TokenStream token_stream(const std::string& text, int64_t domain = 0, int64_t num_domains = 1);
// The PyTorch peer's corpus (gen_text.py output, dumped to a file: docs/demos/text_data.md) as it
// is, byte for byte, each line labelled by the one template that writes it: "On ..." finance (0),
// "Section ..." legal (1), "The ..." general (3), every other line code (2); the domains are
// those of synthetic_domain_names().
TokenStream peer_text_stream(const std::string& text);

// ---- batches of windows -------------------------------------------------------------------------
struct TextBatch {
    Tensor input;                 // (B, T) int64: tokens[s .. s+T)
    Tensor target;                // (B, T) int64: tokens[s+1 .. s+T+1), the input shifted by one
    Tensor domains;               // (B, T) int64: the domain of each input token (what a router sees)
    std::vector<int64_t> starts;  // (B) the window starts s
    int64_t tokens() const { return input.defined() ? input.numel() : 0; }
};

// Training batches: B windows of T+1 tokens at uniformly random starts in [0, N - T), like the
// PyTorch peer's batch(). Batch number n is a pure function of (seed, n), so the whole state is
// two integers: a checkpoint stores state() and a resumed run calls set_state() to get the very
// batch it would have drawn next.
class WindowBatcher {
public:
    struct State {
        uint64_t seed = 0;
        int64_t step = 0;   // batches handed out so far
    };
    // Draws the batcher's seed from gen (two draws). Throws std::invalid_argument when batch or
    // seq is not positive or the stream has fewer than seq + 1 tokens.
    WindowBatcher(const TokenStream& stream, int64_t batch, int64_t seq, Generator& gen,
                  Device device = Device::CPU);

    TextBatch next();
    // The window starts of batch number `step` (what next() would use at that step).
    std::vector<int64_t> starts(int64_t step) const;

    int64_t batch_size() const { return batch_; }
    int64_t seq_len() const { return seq_; }
    State state() const { return state_; }
    void set_state(const State& state);

private:
    const TokenStream* stream_;
    int64_t batch_, seq_;
    Device device_;
    State state_;
};

// Evaluation batches: non-overlapping windows at 0, T, 2T, ... (every window with a full target),
// in order, B per batch, the last batch possibly smaller. No randomness, so every model is scored
// on the same tokens. max_batches > 0 keeps only the first max_batches batches. Average a loss
// over batches weighted by TextBatch::tokens().
class EvalWindows {
public:
    EvalWindows(const TokenStream& stream, int64_t batch, int64_t seq, int64_t max_batches = 0,
                Device device = Device::CPU);
    // The next batch into `batch`; false when all batches have been handed out (then reset()).
    bool next(TextBatch& batch);
    void reset() { position_ = 0; }
    int64_t num_windows() const { return windows_; }
    int64_t num_batches() const { return (windows_ + batch_ - 1) / batch_; }
    int64_t num_tokens() const { return windows_ * seq_; }   // target tokens scored per pass

private:
    const TokenStream* stream_;
    int64_t batch_, seq_, windows_;
    Device device_;
    int64_t position_ = 0;   // windows handed out
};

// ---- the n-gram floor ---------------------------------------------------------------------------
//
// Add-k smoothed byte models fitted on `train` and scored on every next-token prediction of
// `validation` (tokens 1..N-1, as a language model's targets):
//   bigram   P(b | a) = (count(a, b) + k) / (count(a, .) + 256 k)
//   unigram  P(b)     = (count(b) + k)    / (N_train + 256 k)
//   perplexity = exp(mean over predictions of -log P)
// A model that does not beat the bigram has learnt nothing a table of byte pairs does not know.
double bigram_perplexity(const TokenStream& train, const TokenStream& validation, double add_k = 0.1);
double unigram_perplexity(const TokenStream& train, const TokenStream& validation, double add_k = 0.1);
// The bigram's perplexity on the validation predictions whose target token has each domain
// (num_domains entries; 0 for a domain with no tokens).
std::vector<double> bigram_perplexity_by_domain(const TokenStream& train, const TokenStream& validation,
                                                double add_k = 0.1);

}  // namespace mg::demo
