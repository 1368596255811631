// tests/test_text.cpp: the byte tokenizer, the synthetic corpus, the corpus-folder loader, token
// streams, the window batchers and the n-gram floor of demos/common/text.h.
#include <doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>

#include "demos/common/text.h"

using namespace mg::demo;
namespace fs = std::filesystem;

namespace {
std::string temp_dir(const std::string& name) {
    fs::path dir = fs::temp_directory_path() / ("moegrad_test_text_" + name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir.string();
}
void write(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << text;
}
std::string corpus_error(const std::string& dir) {
    mg::Generator gen(1);
    try {
        load_corpus_dir(dir, 0.1, gen);
    } catch (const DataError& e) {
        return e.what();
    }
    return "(no error)";
}
std::set<std::string> texts(const std::vector<TextCorpus::Document>& docs) {
    std::set<std::string> out;
    for (const auto& doc : docs) out.insert(doc.text);
    return out;
}
TokenStream stream_of(const std::string& text) { return token_stream(text); }
}  // namespace

TEST_CASE("text tokenizer: every byte value round-trips") {
    std::string all;
    for (int b = 0; b < 256; ++b) all.push_back((char)(unsigned char)b);
    std::vector<int64_t> ids = encode(all);
    REQUIRE(ids.size() == 256);
    for (int b = 0; b < 256; ++b) CHECK(ids[b] == b);
    CHECK(decode(ids) == all);
    std::string utf8 = "na\xc3\xafve caf\xc3\xa9 \xe2\x82\xac 5\n";
    CHECK(decode(encode(utf8)) == utf8);
    CHECK(encode("").empty());
    CHECK_THROWS_AS(decode({65, 256}), std::invalid_argument);
    CHECK_THROWS_AS(decode({-1}), std::invalid_argument);
}

TEST_CASE("text printable: newlines and printable ASCII kept, other bytes shown as ?") {
    CHECK(printable(std::string("ab\n~ \t\x01\xff", 8)) == "ab\n~ ???");
    CHECK(printable("").empty());
}

TEST_CASE("text corpus: synthetic corpus is deterministic by seed, domains and split by document") {
    SyntheticCorpusConfig config{.documents_per_domain = 60};
    mg::Generator gen_a(3), gen_b(3), gen_c(4);
    TextCorpus a = make_synthetic_corpus(config, gen_a), b = make_synthetic_corpus(config, gen_b),
               c = make_synthetic_corpus(config, gen_c);
    CHECK(a.domain_names == std::vector<std::string>{"finance", "legal", "code", "general"});
    CHECK_NOTHROW(a.validate());
    REQUIRE(a.train.size() == b.train.size());
    for (size_t i = 0; i < a.train.size(); ++i) {
        CHECK(a.train[i].text == b.train[i].text);
        CHECK(a.train[i].domain == b.train[i].domain);
    }
    CHECK(texts(a.validation) == texts(b.validation));
    CHECK(texts(a.train) != texts(c.train));

    // 60 per domain, 6 of them (10%) held out; no document in both splits.
    CHECK(a.document_counts(a.train) == std::vector<int64_t>{54, 54, 54, 54});
    CHECK(a.document_counts(a.validation) == std::vector<int64_t>{6, 6, 6, 6});
    std::set<std::string> train_texts = texts(a.train), validation_texts = texts(a.validation);
    for (const std::string& t : validation_texts) CHECK(train_texts.count(t) == 0);
    // Domains interleave in the training order (shuffled), not four blocks.
    int64_t changes = 0;
    for (size_t i = 1; i < a.train.size(); ++i) changes += a.train[i].domain != a.train[i - 1].domain;
    CHECK(changes > 50);
}

TEST_CASE("text corpus: the grammars keep their structure") {
    mg::Generator gen(11);
    for (int i = 0; i < 40; ++i) {
        // Code: braces and parentheses match, and every line is indented by a multiple of 4.
        std::string code = synthetic_document(2, 6, gen);
        CHECK(std::count(code.begin(), code.end(), '{') == std::count(code.begin(), code.end(), '}'));
        CHECK(std::count(code.begin(), code.end(), '(') == std::count(code.begin(), code.end(), ')'));
        size_t begin = 0;
        while (begin < code.size()) {
            size_t end = code.find('\n', begin);
            std::string line = code.substr(begin, end - begin);
            if (!line.empty()) CHECK(line.find_first_not_of(' ') % 4 == 0);
            if (end == std::string::npos) break;
            begin = end + 1;
        }
        // Legal: the sections are numbered 1, 2, ... and cite only earlier ones.
        std::string legal = synthetic_document(1, 6, gen);
        for (int section = 1; section <= 5; ++section) {
            std::string marker = std::to_string(section) + ". ";
            marker.insert(marker.begin(), '\n');   // (not "\n" + s: a GCC 12 -Wrestrict false positive)
            size_t at = legal.find(marker);
            REQUIRE(at != std::string::npos);
            size_t line_end = legal.find('\n', at + 1);
            std::string clause = legal.substr(at + 1, line_end - at - 1);
            for (size_t ref = clause.find("Section "); ref != std::string::npos; ref = clause.find("Section ", ref + 1))
                CHECK(std::stoi(clause.substr(ref + 8)) < section);
        }
        // Finance and general: one line of headline or opening, and text ends with a newline.
        std::string finance = synthetic_document(0, 4, gen), general = synthetic_document(3, 4, gen);
        CHECK(finance.find(") ") != std::string::npos);
        CHECK(finance.back() == '\n');
        CHECK(general.back() == '\n');
    }
    CHECK_THROWS_AS(synthetic_document(4, 3, gen), std::invalid_argument);
}

TEST_CASE("text stream: every token carries its document's domain; documents end with a blank line") {
    std::vector<TextCorpus::Document> docs = {{"ab\n", 1}, {"cd", 0}};
    TokenStream stream = token_stream(docs, 2);
    CHECK(decode(stream.tokens) == "ab\n\ncd\n\n");
    CHECK(stream.domains == std::vector<int64_t>{1, 1, 1, 1, 0, 0, 0, 0});
    CHECK(stream.domain_counts() == std::vector<int64_t>{4, 4});
    CHECK_THROWS_AS(token_stream(std::vector<TextCorpus::Document>{{"x", 2}}, 2), std::invalid_argument);

    // Raw text stays byte for byte (the peer corpus).
    TokenStream raw = token_stream("x\ny", 0);
    CHECK(decode(raw.tokens) == "x\ny");

    // The peer's gen_text.py lines, labelled by their template.
    TokenStream peer = peer_text_stream("The old river walked.\nint f(int x) {\n    return x;\n}\nOn May 2, Acme.\n"
                                        "Section 1.2. The Buyer shall.\n");
    std::vector<int64_t> expected;
    for (auto [line, domain] : std::vector<std::pair<std::string, int64_t>>{
             {"The old river walked.\n", 3}, {"int f(int x) {\n", 2}, {"    return x;\n", 2}, {"}\n", 2},
             {"On May 2, Acme.\n", 0}, {"Section 1.2. The Buyer shall.\n", 1}})
        expected.insert(expected.end(), line.size(), domain);
    CHECK(peer.domains == expected);
    CHECK(peer.num_domains == 4);

    mg::Generator gen(5);
    TextCorpus corpus = make_synthetic_corpus({.documents_per_domain = 20}, gen);
    TokenStream train = token_stream(corpus, corpus.train);
    REQUIRE(train.tokens.size() == train.domains.size());
    CHECK(std::all_of(train.domains.begin(), train.domains.end(), [](int64_t d) { return d >= 0 && d < 4; }));
    CHECK(std::all_of(train.tokens.begin(), train.tokens.end(), [](int64_t t) { return t >= 0 && t < 256; }));
    for (int64_t count : train.domain_counts()) CHECK(count > 0);
}

TEST_CASE("text windows: targets are the inputs shifted by one; a resumed batcher continues exactly") {
    std::string text;
    for (int i = 0; i < 500; ++i) text.push_back((char)('a' + i % 26));
    TokenStream stream = token_stream(text, 0);
    for (size_t i = 0; i < stream.domains.size(); ++i) stream.domains[i] = (int64_t)(i % 3);
    stream.num_domains = 3;

    mg::Generator gen(9);
    WindowBatcher batches(stream, 4, 16, gen);
    WindowBatcher::State saved;
    mg::Tensor after_save;
    for (int step = 0; step < 20; ++step) {
        if (step == 12) saved = batches.state();
        TextBatch b = batches.next();
        if (step == 12) after_save = b.input;
        REQUIRE(b.input.shape() == mg::Shape{4, 16});
        REQUIRE(b.target.shape() == mg::Shape{4, 16});
        REQUIRE(b.domains.shape() == mg::Shape{4, 16});
        CHECK(b.input.dtype() == mg::DType::Int64);
        std::vector<int64_t> in = b.input.to_vector<int64_t>(), tg = b.target.to_vector<int64_t>(),
                             dm = b.domains.to_vector<int64_t>();
        for (int r = 0; r < 4; ++r) {
            int64_t s = b.starts[r];
            CHECK(s >= 0);
            CHECK(s + 16 < stream.size());   // the last target token exists
            for (int t = 0; t < 16; ++t) {
                CHECK(in[r * 16 + t] == stream.tokens[s + t]);
                CHECK(tg[r * 16 + t] == stream.tokens[s + t + 1]);
                CHECK(dm[r * 16 + t] == stream.domains[s + t]);
            }
        }
    }
    CHECK(batches.state().step == 20);
    mg::Generator other(1);
    WindowBatcher resumed(stream, 4, 16, other);
    resumed.set_state(saved);
    CHECK(resumed.next().input.to_vector<int64_t>() == after_save.to_vector<int64_t>());
    // Different batches differ; the same generator seed gives the same batcher.
    CHECK(batches.starts(0) != batches.starts(1));
    mg::Generator again(9);
    CHECK(WindowBatcher(stream, 4, 16, again).starts(3) == batches.starts(3));

    CHECK_THROWS_AS(WindowBatcher(stream, 0, 16, gen), std::invalid_argument);
    CHECK_THROWS_AS(WindowBatcher(stream, 4, 500, gen), std::invalid_argument);
}

TEST_CASE("text eval windows: non-overlapping, in order, the same every pass") {
    TokenStream stream = token_stream(std::string(101, 'x'), 0);   // (101 - 1) / 10 = 10 windows
    EvalWindows eval(stream, 4, 10);
    CHECK(eval.num_windows() == 10);
    CHECK(eval.num_batches() == 3);
    CHECK(eval.num_tokens() == 100);
    std::vector<int64_t> starts, sizes;
    for (TextBatch b; eval.next(b);) {
        starts.insert(starts.end(), b.starts.begin(), b.starts.end());
        sizes.push_back(b.input.size(0));
    }
    CHECK(starts == std::vector<int64_t>{0, 10, 20, 30, 40, 50, 60, 70, 80, 90});
    CHECK(sizes == std::vector<int64_t>{4, 4, 2});
    TextBatch again;
    CHECK_FALSE(eval.next(again));
    eval.reset();
    REQUIRE(eval.next(again));
    CHECK(again.starts == std::vector<int64_t>{0, 10, 20, 30});
    CHECK(EvalWindows(stream, 4, 10, /*max_batches=*/2).num_windows() == 8);
}

TEST_CASE("bigram perplexity: a tiny stream computed by hand") {
    // train "abab": pairs ab, ba, ab, so count(a, .) = 2, count(a, b) = 2, count(b, .) = 1,
    // count(b, a) = 1. With k = 0.1:
    //   P(b | a) = (2 + 0.1) / (2 + 25.6) = 2.1 / 27.6,   P(a | b) = 1.1 / 26.6
    TokenStream train = stream_of("abab");
    CHECK(bigram_perplexity(train, stream_of("ab"), 0.1) == doctest::Approx(27.6 / 2.1).epsilon(1e-12));
    CHECK(bigram_perplexity(train, stream_of("aba"), 0.1) ==
          doctest::Approx(std::sqrt(27.6 / 2.1 * 26.6 / 1.1)).epsilon(1e-12));
    // An unseen pair gets k / (count + 256 k): "aa" -> P(a | a) = 0.1 / 27.6.
    CHECK(bigram_perplexity(train, stream_of("aa"), 0.1) == doctest::Approx(276.0).epsilon(1e-12));
    // Unigram: P(a) = P(b) = (2 + 0.1) / (4 + 25.6), scored on the predictions b, a of "aba".
    CHECK(unigram_perplexity(train, stream_of("aba"), 0.1) == doctest::Approx(29.6 / 2.1).epsilon(1e-12));
    // Per domain: the prediction of token i counts for token i's domain.
    TokenStream labelled = stream_of("aba");
    labelled.domains = {0, 1, 0};
    labelled.num_domains = 2;
    std::vector<double> by_domain = bigram_perplexity_by_domain(train, labelled, 0.1);
    CHECK(by_domain[1] == doctest::Approx(27.6 / 2.1).epsilon(1e-12));
    CHECK(by_domain[0] == doctest::Approx(26.6 / 1.1).epsilon(1e-12));
    CHECK_THROWS_AS(bigram_perplexity(train, stream_of("a")), std::invalid_argument);
    CHECK_THROWS_AS(bigram_perplexity(train, stream_of("ab"), 0.0), std::invalid_argument);
}

TEST_CASE("bigram perplexity on the synthetic corpus: a floor between 1 and 256, under the unigram") {
    mg::Generator gen(0);
    TextCorpus corpus = make_synthetic_corpus({.documents_per_domain = 200}, gen);
    TokenStream train = token_stream(corpus, corpus.train), validation = token_stream(corpus, corpus.validation);
    double bigram = bigram_perplexity(train, validation), unigram = unigram_perplexity(train, validation);
    MESSAGE("synthetic corpus (200 docs/domain): bigram ", bigram, ", unigram ", unigram);
    CHECK(bigram > 1.0);
    CHECK(bigram < 20.0);
    CHECK(unigram < 60.0);
    CHECK(bigram < unigram);
}

TEST_CASE("text corpus dir: one domain per subfolder, large files cut at line boundaries") {
    std::string root = temp_dir("corpus");
    write(root + "/legal/a.txt", "The Licensee shall pay.\n");
    write(root + "/legal/b.txt", "Section 2 applies.\n");
    write(root + "/legal/notes.md", "ignored: not .txt\n");
    write(root + "/legal/empty.txt", "");
    std::string big;
    for (int i = 0; i < 300; ++i) big += "int line_" + std::to_string(i) + " = " + std::to_string(i) + ";\n";
    write(root + "/code/big.txt", big);
    write(root + "/README", "a file at the top level is ignored\n");

    mg::Generator gen(2);
    TextCorpus corpus = load_corpus_dir(root, 0.2, gen, 1024);
    CHECK(corpus.domain_names == std::vector<std::string>{"code", "legal"});   // sorted by name
    CHECK_NOTHROW(corpus.validate());
    std::vector<int64_t> train = corpus.document_counts(corpus.train), valid = corpus.document_counts(corpus.validation);
    CHECK(train[1] + valid[1] == 2);
    CHECK(valid[1] == 1);   // at least one held-out document per domain
    std::vector<std::string> code_docs;
    for (const auto* split : {&corpus.train, &corpus.validation})
        for (const auto& doc : *split)
            if (doc.domain == 0) {
                CHECK(doc.text.size() <= 1024);
                CHECK(doc.text.back() == '\n');   // cut at a line boundary
                code_docs.push_back(doc.text);
            }
    CHECK(code_docs.size() >= big.size() / 1024);
    std::sort(code_docs.begin(), code_docs.end(), [](const std::string& x, const std::string& y) {
        return std::stoi(x.substr(9)) < std::stoi(y.substr(9));   // "int line_<n> = ..."
    });
    std::string joined;
    for (const std::string& doc : code_docs) joined += doc;
    CHECK(joined == big);   // nothing lost, nothing repeated

    mg::Generator gen_again(2);
    TextCorpus again = load_corpus_dir(root, 0.2, gen_again, 1024);
    CHECK(texts(again.validation) == texts(corpus.validation));

    // One file as one domain.
    mg::Generator gen_file(3);
    TextCorpus one = load_text_file(root + "/code/big.txt", 0.1, gen_file, 1024);
    CHECK(one.domain_names == std::vector<std::string>{"big"});
    CHECK(one.train.size() + one.validation.size() == code_docs.size());
    CHECK(read_text_file(root + "/code/big.txt") == big);
}

TEST_CASE("text corpus dir: each error names the path") {
    std::string root = temp_dir("errors");
    CHECK(corpus_error(root + "/missing") == root + "/missing: no such directory");
    write(root + "/file.txt", "text\n");
    CHECK(corpus_error(root + "/file.txt").find(root + "/file.txt: not a directory") == 0);
    fs::create_directories(root + "/flat");
    write(root + "/flat/doc.txt", "a document outside any domain folder\n");
    CHECK(corpus_error(root + "/flat").find(root + "/flat: no subfolders") == 0);
    write(root + "/nodocs/legal/readme.md", "not a .txt\n");
    CHECK(corpus_error(root + "/nodocs").find(root + "/nodocs/legal: no .txt file with any text") == 0);
    write(root + "/blank/general/a.txt", "\n  \n");
    write(root + "/blank/general/b.txt", "");
    CHECK(corpus_error(root + "/blank").find(root + "/blank/general: no .txt file with any text") == 0);

    mg::Generator gen(1);
    CHECK_THROWS_WITH_AS(read_text_file(root + "/nope.txt"), (root + "/nope.txt: no such file").c_str(), DataError);
    CHECK_THROWS_WITH_AS(read_text_file(root), (root + ": is a directory, expected a file").c_str(), DataError);
    CHECK_THROWS_AS(load_text_file(root + "/nope.txt", 0.1, gen), DataError);

    // An unreadable file (only testable when not running as root, who can read anything).
    write(root + "/locked/legal/secret.txt", "text\n");
    fs::permissions(root + "/locked/legal/secret.txt", fs::perms::none);
    if (geteuid() != 0)
        CHECK(corpus_error(root + "/locked").find(root + "/locked/legal/secret.txt: cannot open") == 0);
    fs::permissions(root + "/locked/legal/secret.txt", fs::perms::owner_all);
}
