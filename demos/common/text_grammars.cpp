// demos/common/text_grammars.cpp: the four grammars of the synthetic corpus (finance, legal,
// code, general) and synthetic_document(), which picks one (see text.h).
//
// Each grammar writes one document as plain text from a handful of word lists and templates, but
// with structure a model can learn beyond the word lists: numbers that agree with each other (a
// percentage change that matches its two amounts), words that agree in number ("the dogs were",
// "a/an"), cross-references to sections that exist, matching braces and indentation.
// docs/demos/text_data.md shows a sample of each.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "demos/common/text.h"

namespace mg::demo {

// ---- grammar helpers ------------------------------------------------------------------------------
namespace {

// Draws on top of the generator, so that a grammar reads as its choices.
class Draw {
public:
    explicit Draw(Generator& gen) : gen_(gen) {}
    int64_t between(int64_t low, int64_t high) { return gen_.randint(low, high + 1); }   // [low, high]
    bool chance(double p) { return gen_.uniform() < p; }
    template <typename T, size_t N> const T& pick(const T (&items)[N]) { return items[gen_.randint(0, (int64_t)N)]; }
    template <typename T> const T& pick(const std::vector<T>& items) { return items[gen_.randint(0, (int64_t)items.size())]; }
    // k distinct indices of [0, n), in random order.
    std::vector<int64_t> sample(int64_t n, int64_t k) {
        std::vector<int64_t> order((size_t)n);
        std::iota(order.begin(), order.end(), 0);
        for (int64_t i = 0; i < k && i < n; ++i) std::swap(order[i], order[gen_.randint(i, n)]);
        order.resize((size_t)std::min(k, n));
        return order;
    }

private:
    Generator& gen_;
};

std::string fixed(double value, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
    return buf;
}
std::string capitalized(std::string s) {
    if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = (char)(s[0] - 'a' + 'A');
    return s;
}
std::string uppercase(std::string s) {
    for (char& c : s)
        if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
    return s;
}
std::string join(const std::vector<std::string>& parts, const std::string& separator) {
    std::string out;
    for (size_t i = 0; i < parts.size(); ++i) out += (i ? separator : "") + parts[i];
    return out;
}

const char* const kMonths[] = {"January", "February", "March", "April", "May", "June", "July",
                               "August", "September", "October", "November", "December"};
const char* const kOrdinals[] = {"first", "second", "third", "fourth"};
const char* const kStates[] = {"Delaware", "New York", "California", "Texas", "Nevada", "Ohio", "Oregon", "Maine"};

// ---- finance: an earnings report ------------------------------------------------------------------
//
// One company and quarter per document; every number is consistent with the others: a change in
// percent matches its two amounts, a segment's share of revenue matches the headline revenue,
// a buyback's average price is its total over its shares, guidance is "above" analysts' estimate
// only when the estimate is below its range, results are reported in the months after the quarter.
struct Company { const char* name; const char* ticker; };
const Company kCompanies[] = {
    {"Acme Corp", "ACME"}, {"Globex", "GLBX"}, {"Initech", "INIT"}, {"Umbrella Holdings", "UMBR"},
    {"Stark Industries", "STRK"}, {"Wayne Enterprises", "WAYN"}, {"Hooli", "HOOL"}, {"Vandelay Imports", "VNDL"},
    {"Northwind Traders", "NWND"}, {"Cyberdyne Systems", "CYBD"}, {"Soylent Foods", "SOYL"}, {"Tyrell Corp", "TYRL"},
    {"Blue Harbor Energy", "BHRB"}, {"Pioneer Rail", "PNRL"}, {"Summit Bancorp", "SMBC"}, {"Falcon Mining", "FLCN"}};
const char* const kSegments[] = {"cloud", "retail", "hardware", "advertising", "services", "energy",
                                 "consumer", "industrial", "software", "payments", "logistics", "wholesale"};
const char* const kMetrics[] = {"net income", "operating income", "gross profit", "free cash flow",
                                "operating expenses", "subscription revenue", "research spending", "adjusted earnings"};
const char* const kUpVerbs[] = {"rose", "increased", "climbed", "grew", "jumped"};
const char* const kDownVerbs[] = {"fell", "declined", "decreased", "slipped", "dropped"};
const char* const kBanks[] = {"Halden Securities", "Northgate Capital", "Brightwater Partners", "Cole & Reyes",
                              "Ashford Research", "Meridian Bank"};
const char* const kBuyRatings[] = {"buy", "outperform", "overweight"};
const char* const kSellRatings[] = {"sell", "underperform", "underweight"};
const char* const kHoldRatings[] = {"hold", "neutral", "market perform"};
const char* const kFirstNames[] = {"Maria", "James", "Priya", "Daniel", "Chen", "Laura", "Ahmed", "Sofia",
                                   "Robert", "Yuki", "Elena", "Marcus"};
const char* const kLastNames[] = {"Alvarez", "Brooks", "Sharma", "Keller", "Wong", "Fischer", "Haddad",
                                  "Moretti", "Lindqvist", "Tanaka", "Novak", "Owens"};
const char* const kQuoteOpenings[] = {"We are pleased with the growth in", "We remain focused on",
                                      "We saw strong demand for", "We continue to invest in",
                                      "We are cautious about", "Our results reflect the strength of"};
const char* const kTradingTimes[] = {"after-hours", "premarket", "early", "late", "midday"};

std::string finance_document(int64_t sentences, Generator& gen) {
    Draw d(gen);
    const Company& co = d.pick(kCompanies);
    const std::string name = co.name, ticker = co.ticker;
    int64_t quarter = d.between(1, 4), year = d.between(2012, 2024);
    // Results come out in the first or second month after the quarter ends.
    int64_t report_month = (quarter * 3 + d.between(0, 1)) % 12;   // 0-based: Q1 -> April or May
    int64_t report_year = quarter == 4 ? year + 1 : year;
    double revenue = (double)d.between(200, 20000) / 10.0;         // millions
    std::vector<int64_t> segments = d.sample(std::size(kSegments), 3);
    size_t segment_used = 0;

    std::vector<std::string> body;
    std::string headline;
    if (d.chance(0.5)) {
        headline = name + " (" + ticker + ") reported results for the " + kOrdinals[quarter - 1] + " quarter of " +
                   std::to_string(year) + " on " + kMonths[report_month] + " " + std::to_string(d.between(1, 28)) +
                   ", with revenue of $" + fixed(revenue, 1) + " million.";
    } else {
        double pct = (double)d.between(5, 300) / 10.0;
        bool up = d.chance(0.6);
        double before = revenue / (1.0 + (up ? pct : -pct) / 100.0);
        headline = name + " (" + ticker + ") posted " + kOrdinals[quarter - 1] + "-quarter revenue of $" +
                   fixed(revenue, 1) + " million on " + kMonths[report_month] + " " +
                   std::to_string(d.between(1, 28)) + ", " + std::to_string(report_year) + ", " +
                   (up ? "up " : "down ") + fixed(pct, 1) + "% from $" + fixed(before, 1) + " million a year earlier.";
    }
    for (int64_t s = 1; s < sentences; ++s) {
        switch (d.between(0, 9)) {
            case 0: {   // a metric (a part of revenue) and its change, consistent
                double after = revenue * (double)d.between(5, 60) / 100.0, pct = (double)d.between(5, 400) / 10.0;
                bool up = d.chance(0.5);
                double before = after / (1.0 + (up ? pct : -pct) / 100.0);
                body.push_back(capitalized(d.pick(kMetrics)) + " " + (up ? d.pick(kUpVerbs) : d.pick(kDownVerbs)) +
                               " " + fixed(pct, 1) + "% to $" + fixed(after, 1) + " million from $" +
                               fixed(before, 1) + " million a year earlier.");
                break;
            }
            case 1: {   // earnings per share
                double eps = (double)d.between(-80, 450) / 100.0, before = (double)d.between(-80, 450) / 100.0;
                std::string then = before < 0 ? "a loss of $" + fixed(-before, 2) : "$" + fixed(before, 2);
                if (eps < 0)
                    body.push_back("The company posted a loss of $" + fixed(-eps, 2) + " per share, compared with " +
                                   (before < 0 ? then : "a profit of " + then) + " per share a year earlier.");
                else
                    body.push_back("Diluted earnings per share were $" + fixed(eps, 2) + ", compared with " + then +
                                   " a year earlier.");
                break;
            }
            case 2: {   // the share price
                bool up = d.chance(0.5);
                body.push_back("Shares of " + ticker + " " + (up ? d.pick(kUpVerbs) : d.pick(kDownVerbs)) + " " +
                               fixed((double)d.between(5, 250) / 10.0, 1) + "% to $" +
                               fixed((double)d.between(500, 40000) / 100.0, 2) + " in " + d.pick(kTradingTimes) +
                               " trading.");
                break;
            }
            case 3: {   // guidance against the estimate: above / below / in line, as the numbers say
                double low = std::round(revenue * (double)d.between(90, 110)) / 100.0;
                double high = low + std::round(revenue * (double)d.between(2, 10)) / 100.0 + 0.1;
                int64_t where = d.between(0, 2);
                double estimate = where == 0 ? low * (double)d.between(90, 99) / 100.0
                                : where == 1 ? high * (double)d.between(101, 110) / 100.0
                                             : (low + high) / 2.0;
                const char* relation = where == 0 ? "above" : where == 1 ? "below" : "in line with";
                body.push_back("For the " + std::string(kOrdinals[quarter % 4]) + " quarter, " + name +
                               " expects revenue of $" + fixed(low, 1) + " million to $" + fixed(high, 1) +
                               " million, " + relation + " the $" + fixed(estimate, 1) +
                               " million analysts had expected.");
                break;
            }
            case 4: {   // dividend: the record date comes before the payment date
                int64_t month = d.between(0, 11), record = d.between(1, 14), pay = record + d.between(7, 14);
                body.push_back("The board declared a quarterly dividend of $" +
                               fixed((double)d.between(5, 150) / 100.0, 2) + " per share, payable on " +
                               kMonths[month] + " " + std::to_string(pay) + " to shareholders of record on " +
                               kMonths[month] + " " + std::to_string(record) + ".");
                break;
            }
            case 5: {   // buyback: total = shares x average price
                double shares = (double)d.between(5, 200) / 10.0, price = (double)d.between(1000, 30000) / 100.0;
                body.push_back(name + " repurchased " + fixed(shares, 1) + " million shares for $" +
                               fixed(shares * price, 1) + " million during the quarter, an average of $" +
                               fixed(price, 2) + " per share.");
                break;
            }
            case 6: {   // a segment's revenue as a share of the headline revenue
                double share = (double)d.between(50, 450) / 10.0;
                std::string segment = kSegments[segments[segment_used++ % segments.size()]];
                body.push_back(capitalized(segment) + " revenue was $" + fixed(revenue * share / 100.0, 1) +
                               " million, or " + fixed(share, 1) + "% of the total.");
                break;
            }
            case 7: {   // analysts: the verb decides the kind of rating
                int64_t action = d.between(0, 2);
                std::string rating = action == 0 ? d.pick(kBuyRatings) : action == 1 ? d.pick(kSellRatings)
                                                                                     : d.pick(kHoldRatings);
                const char* verb = action == 0 ? "upgraded " : action == 1 ? "downgraded " : "reiterated their ";
                body.push_back("Analysts at " + std::string(d.pick(kBanks)) + " " + verb + ticker +
                               (action == 2 ? " rating at " : " to ") + rating + ", with a price target of $" +
                               std::to_string(d.between(10, 500)) + ".");
                break;
            }
            case 8: {   // a quote
                std::string object = d.chance(0.6) ? "our " + std::string(kSegments[segments[0]]) + " business"
                                                   : d.chance(0.5) ? "international markets" : "cost discipline";
                const char* title = d.chance(0.6) ? "chief executive officer" : "chief financial officer";
                body.push_back("\"" + std::string(d.pick(kQuoteOpenings)) + " " + object + ",\" said " +
                               d.pick(kFirstNames) + " " + d.pick(kLastNames) + ", " + title + " of " + name + ".");
                break;
            }
            default: {  // margins: widened when the new one is larger
                double before = (double)d.between(20, 400) / 10.0, now = (double)d.between(20, 400) / 10.0;
                if (now == before) now += 0.5;
                body.push_back("Operating margin " + std::string(now > before ? "widened" : "narrowed") + " to " +
                               fixed(now, 1) + "% from " + fixed(before, 1) + "%.");
                break;
            }
        }
    }
    return headline + "\n" + join(body, " ") + "\n";
}

// ---- legal: a short agreement ---------------------------------------------------------------------
//
// A title, a preamble naming the two parties, then numbered sections, each with a heading that
// matches its clause. Cross-references only point back to sections that exist; number words
// agree with their digits ("thirty (30) days"); the subject matter agrees in number ("the Goods
// are", "the Software is").
struct AgreementKind {
    const char* title; const char* first; const char* second; const char* subject;
    bool subject_plural; bool second_pays;
};
const AgreementKind kAgreements[] = {
    {"License Agreement", "Licensor", "Licensee", "the Software", false, true},
    {"Lease Agreement", "Landlord", "Tenant", "the Premises", true, true},
    {"Purchase Agreement", "Seller", "Buyer", "the Goods", true, true},
    {"Services Agreement", "Provider", "Client", "the Services", true, true},
    {"Employment Agreement", "Company", "Employee", "the Equipment", false, false},
    {"Loan Agreement", "Lender", "Borrower", "the Loan", false, true},
    {"Supply Agreement", "Supplier", "Purchaser", "the Products", true, true},
    {"Consulting Agreement", "Consultant", "Client", "the Deliverables", true, true}};
struct NumberWord { int64_t value; const char* word; };
const NumberWord kDayCounts[] = {{5, "five"}, {7, "seven"}, {10, "ten"}, {14, "fourteen"}, {15, "fifteen"},
                                 {20, "twenty"}, {30, "thirty"}, {45, "forty-five"}, {60, "sixty"},
                                 {90, "ninety"}, {120, "one hundred twenty"}};
const NumberWord kYearCounts[] = {{1, "one"}, {2, "two"}, {3, "three"}, {5, "five"}};
const char* const kEvents[] = {"the Effective Date", "receipt of written notice", "the end of each calendar month",
                               "delivery of an invoice", "the Closing", "any termination of this Agreement"};
const char* const kObligations[] = {"maintain {S} in good condition", "keep {S} free of all liens",
                                    "use {S} only for lawful purposes", "insure {S} against loss or damage",
                                    "return {S} upon termination of this Agreement", "inspect {S} at least once a year"};
const char* const kDisasters[] = {"fire", "flood", "earthquake", "strike", "war", "epidemic", "power failure"};

std::string with_article(const std::string& word) {   // "a Delaware", "an Ohio"
    return (std::string("AEIOUaeiou").find(word[0]) != std::string::npos ? "an " : "a ") + word;
}
std::string days(Draw& d) {
    const NumberWord& n = d.pick(kDayCounts);
    return std::string(n.word) + " (" + std::to_string(n.value) + ")";
}
std::string replace_subject(std::string pattern, const std::string& subject) {
    size_t at = pattern.find("{S}");
    return at == std::string::npos ? pattern : pattern.replace(at, 3, subject);
}

std::string legal_document(int64_t sentences, Generator& gen) {
    Draw d(gen);
    const AgreementKind& kind = d.pick(kAgreements);
    std::vector<int64_t> parties = d.sample(std::size(kCompanies), 2);
    const std::string first = kind.first, second = kind.second, subject = kind.subject;
    const std::string payer = kind.second_pays ? second : first, payee = kind.second_pays ? first : second;
    const char* is = kind.subject_plural ? "are" : "is";

    std::string out = uppercase(kind.title) + "\n";
    out += "This " + std::string(kind.title) + " (the \"Agreement\") is made as of " + d.pick(kMonths) + " " +
           std::to_string(d.between(1, 28)) + ", " + std::to_string(d.between(1995, 2024)) + ", between " +
           kCompanies[parties[0]].name + ", " + with_article(d.pick(kStates)) + " " +
           (d.chance(0.5) ? "corporation" : "limited liability company") + " (the \"" + first + "\"), and " +
           kCompanies[parties[1]].name + " (the \"" + second + "\").\n";

    // Clause kinds in random order, without repeats; those that cite an earlier section wait
    // until there is one (two for survival).
    constexpr int64_t kClauseKinds = 10;
    std::vector<int64_t> order = d.sample(kClauseKinds, kClauseKinds);
    for (int64_t section = 1; section < sentences; ++section) {
        auto ok = [&](int64_t k) { return (k != 3 && k != 4 && k != 8) || section > (k == 4 ? 2 : 1); };
        auto next = std::find_if(order.begin(), order.end(), ok);
        int64_t clause = next == order.end() ? 0 : *next;
        if (next != order.end()) order.erase(next);
        auto earlier = [&]() { return std::to_string(d.between(1, section - 1)); };
        const std::string& party = d.chance(0.5) ? first : second;
        const std::string& other = &party == &first ? second : first;
        std::string heading, text;
        switch (clause) {
            case 0:
                heading = "Payment";
                text = "The " + payer + " shall pay the " + payee + " " +
                       (d.chance(0.5) ? "a fee of $" + std::to_string(d.between(1, 90) * 500) + " per month"
                                      : "the sum of $" + std::to_string(d.between(10, 900) * 1000)) +
                       " within " + days(d) + " days after " + d.pick(kEvents) + ".";
                break;
            case 1:
                heading = "Obligations";
                text = "The " + party + " shall " + replace_subject(d.pick(kObligations), subject) + ".";
                break;
            case 2:
                heading = "Confidentiality";
                text = "Each party shall keep the Confidential Information of the other party confidential for ";
                {
                    const NumberWord& y = d.pick(kYearCounts);
                    text += std::string(y.word) + " (" + std::to_string(y.value) + ") year" + (y.value == 1 ? "" : "s") +
                            " after " + (d.chance(0.5) ? "the Effective Date." : "termination of this Agreement.");
                }
                break;
            case 3:
                heading = "Termination";
                text = "Either party may terminate this Agreement upon " + days(d) +
                       " days' prior written notice if the other party breaches Section " + earlier() +
                       " and fails to cure such breach within " + days(d) + " days.";
                break;
            case 4: {
                heading = "Survival";
                std::vector<int64_t> two = d.sample(section - 1, 2);
                std::sort(two.begin(), two.end());
                text = "Sections " + std::to_string(two[0] + 1) + " and " + std::to_string(two[1] + 1) +
                       " shall survive any expiration or termination of this Agreement.";
                break;
            }
            case 5: {
                heading = "Representations";
                std::vector<std::string> items = {"it has full power to enter into this Agreement",
                                                  "it is duly organized under the laws of " + std::string(d.pick(kStates)),
                                                  subject + " " + is + " free of material defects",
                                                  "no litigation is pending against it",
                                                  "it will comply with all applicable laws"};
                std::vector<int64_t> chosen = d.sample((int64_t)items.size(), d.between(2, 4));
                text = "The " + party + " represents and warrants that: ";
                for (size_t i = 0; i < chosen.size(); ++i) {
                    text += std::string(i + 1 == chosen.size() ? "and " : "") + "(" + (char)('a' + i) + ") " +
                            items[chosen[i]] + (i + 1 == chosen.size() ? "." : "; ");
                }
                break;
            }
            case 6:
                heading = "Indemnification";
                text = "The " + party + " shall indemnify and hold harmless the " + other +
                       " from any claim arising out of " +
                       (d.chance(0.5) ? "its use of " + subject : std::string("its negligence")) + ".";
                break;
            case 7:
                heading = "Governing Law";
                text = "This Agreement shall be governed by the laws of the State of " + std::string(d.pick(kStates)) +
                       ", without regard to its conflict of laws principles.";
                break;
            case 8:
                heading = "Limitation of Liability";
                text = "Notwithstanding Section " + earlier() +
                       ", neither party shall be liable for any indirect or consequential damages in excess of $" +
                       std::to_string(d.between(1, 50) * 10000) + ".";
                break;
            default: {
                heading = d.chance(0.5) ? "Force Majeure" : "Assignment";
                if (heading == "Assignment") {
                    text = "The " + party + " may not assign this Agreement without the prior written consent of the " +
                           other + ", which consent shall not be unreasonably withheld.";
                } else {
                    std::vector<int64_t> two = d.sample(std::size(kDisasters), 2);
                    text = std::string("Neither party shall be liable for any delay caused by ") + kDisasters[two[0]] +
                           ", " + kDisasters[two[1]] + " or any other event beyond its reasonable control.";
                }
                break;
            }
        }
        out += std::to_string(section) + ". " + heading + ". " + text + "\n";
    }
    return out;
}

// ---- code: a small C file -------------------------------------------------------------------------
//
// Top-level items: an include block, #defines, structs and functions. Inside functions, a small
// recursive statement grammar: nested if / for / while blocks with matching braces and four-space
// indentation, locals declared before use, literals of the function's type (2, 2.0, 2.0f), calls
// only to functions defined earlier with the right type and number of arguments, printf formats
// that match the type.
const char* const kCodeTypes[] = {"int", "long", "double", "float"};
const char* const kPrintfFormats[] = {"%d", "%ld", "%f", "%f"};
const char* const kCodeVerbs[] = {"compute", "update", "scale", "find", "count", "sum", "clamp",
                                  "normalize", "accumulate", "average", "check", "measure"};
const char* const kCodeNouns[] = {"total", "weights", "scores", "values", "prices", "counts",
                                  "offsets", "samples", "errors", "items", "limits", "steps"};
const char* const kLocalNames[] = {"acc", "result", "best", "total", "delta", "sum", "tmp", "value"};
const char* const kHeaders[] = {"stdio.h", "stdlib.h", "math.h", "string.h", "stddef.h"};
const char* const kStructNames[] = {"point", "range", "sample", "account", "order", "vector", "node"};
const char* const kFieldNames[] = {"x", "y", "z", "low", "high", "count", "price", "weight", "id"};

// arity 0: (const T *data, size_t n); -1: a void print function
struct CodeFunction { std::string name; int64_t type; int64_t arity; };

struct CodeWriter {
    explicit CodeWriter(Draw& draw) : d(draw) {}
    Draw& d;
    std::string out;
    int64_t type = 0;                        // index into kCodeTypes
    std::vector<std::string> locals;         // assignable variables of the type
    std::vector<std::string> readable;       // locals, parameters, and data[i] inside the array loop
    const std::vector<CodeFunction>* earlier = nullptr;
    bool array = false, in_array_loop = false;

    std::string literal() {
        int64_t v = d.between(1, 9);
        if (type <= 1) return std::to_string(v * (d.chance(0.3) ? 10 : 1));
        return std::to_string(v) + "." + std::to_string(d.between(0, 9)) + (type == 3 ? "f" : "");
    }
    std::string term() {
        if (in_array_loop && d.chance(0.5)) return "data[i]";
        if (d.chance(0.25)) return literal();
        if (d.chance(0.15)) {   // a call to an earlier scalar function of this type
            std::vector<const CodeFunction*> callable;
            for (const CodeFunction& f : *earlier)
                if (f.type == type && f.arity > 0) callable.push_back(&f);
            if (!callable.empty()) {
                const CodeFunction& f = *d.pick(callable);
                std::vector<std::string> args;
                for (int64_t a = 0; a < f.arity; ++a) args.push_back(d.pick(readable));
                return f.name + "(" + join(args, ", ") + ")";
            }
        }
        return d.pick(readable);
    }
    std::string expression() {
        if (d.chance(0.4)) return term();
        const char* ops[] = {" + ", " - ", " * ", " + ", " * "};
        return term() + d.pick(ops) + term();
    }
    void line(int64_t depth, const std::string& text) { out += std::string((size_t)(4 * depth), ' ') + text + "\n"; }

    void block(int64_t depth, int64_t statements) {
        for (int64_t s = 0; s < statements; ++s) {
            int64_t kind = depth < 3 && d.chance(0.4) ? d.between(1, 3) : 0;
            if (kind == 2 && (!array || in_array_loop)) kind = 1;
            if (kind == 0) {
                const char* assign[] = {" = ", " += ", " -= ", " *= "};
                std::string target = d.pick(locals), value = expression();
                if (value == target) value = literal();   // no "x = x;"
                line(depth, target + d.pick(assign) + value + ";");
            } else if (kind == 1) {
                const char* compare[] = {" > ", " < ", " >= ", " <= ", " == ", " != "};
                std::string left = d.pick(readable), right = term();
                if (right == left) right = literal();
                line(depth, "if (" + left + d.pick(compare) + right + ") {");
                block(depth + 1, d.between(1, 2));
                if (d.chance(0.35)) {
                    line(depth, "} else {");
                    block(depth + 1, 1);
                }
                line(depth, "}");
            } else if (kind == 2) {
                line(depth, "for (size_t i = 0; i < n; ++i) {");
                in_array_loop = true;
                readable.push_back("data[i]");
                block(depth + 1, d.between(1, 2));
                readable.pop_back();
                in_array_loop = false;
                line(depth, "}");
            } else {
                const std::string& v = d.pick(locals);
                line(depth, "while (" + v + " > " + literal() + ") {");
                line(depth + 1, v + " = " + v + " / " + (type <= 1 ? "2" : type == 2 ? "2.0" : "2.0f") + ";");
                line(depth, "}");
            }
        }
    }
};

std::string code_function(Draw& d, std::vector<CodeFunction>& functions) {
    CodeWriter w(d);
    w.type = d.between(0, 3);
    w.earlier = &functions;
    const std::string type = kCodeTypes[w.type];
    std::string noun = d.pick(kCodeNouns);
    auto unique = [&](std::string name) {   // no redefinition within a file
        for (const CodeFunction& g : functions)
            if (g.name == name) return name + "_" + std::to_string(functions.size());
        return name;
    };
    if (d.chance(0.15)) {   // a printing loop: the format matches the type
        std::string name = unique("print_" + noun);
        functions.push_back({name, w.type, -1});   // void: never called in an expression
        w.out = "void " + name + "(const " + type + " *data, size_t n) {\n";
        w.line(1, "for (size_t i = 0; i < n; ++i) {");
        w.line(2, "printf(\"" + std::string(kPrintfFormats[w.type]) + "\\n\", data[i]);");
        w.line(1, "}");
        w.out += "}\n";
        return w.out;
    }
    CodeFunction f{unique(std::string(d.pick(kCodeVerbs)) + "_" + noun), w.type, d.chance(0.45) ? 0 : d.between(1, 3)};
    w.array = f.arity == 0;
    std::vector<std::string> params;
    if (w.array) {
        params = {"const " + type + " *data", "size_t n"};
    } else {
        const char* names[] = {"a", "b", "c"};
        for (int64_t p = 0; p < f.arity; ++p) {
            params.push_back(type + " " + names[p]);
            w.readable.push_back(names[p]);
        }
    }
    w.out = type + " " + f.name + "(" + join(params, ", ") + ") {\n";
    std::vector<int64_t> local_names = d.sample(std::size(kLocalNames), d.between(1, 2));
    for (int64_t l : local_names) {
        std::string init = w.readable.empty() || d.chance(0.5) ? (w.type <= 1 ? "0" : w.type == 2 ? "0.0" : "0.0f")
                                                                : w.expression();
        w.line(1, type + " " + kLocalNames[l] + " = " + init + ";");
        w.locals.push_back(kLocalNames[l]);
        w.readable.push_back(kLocalNames[l]);
    }
    if (w.array) {   // a function over an array always walks it
        w.line(1, "for (size_t i = 0; i < n; ++i) {");
        w.in_array_loop = true;
        w.readable.push_back("data[i]");
        w.block(2, d.between(1, 3));
        w.readable.pop_back();
        w.in_array_loop = false;
        w.line(1, "}");
        w.block(1, d.between(0, 1));
    } else {
        w.block(1, d.between(1, 3));
    }
    w.line(1, "return " + w.locals[0] + ";");
    w.out += "}\n";
    functions.push_back(f);
    return w.out;
}

std::string code_document(int64_t sentences, Generator& gen) {
    Draw d(gen);
    std::vector<std::string> items;
    std::vector<CodeFunction> functions;
    std::vector<int64_t> struct_names = d.sample(std::size(kStructNames), std::size(kStructNames));
    size_t structs = 0;
    int64_t s = 0;
    if (d.chance(0.7)) {   // the include block
        std::vector<int64_t> headers = d.sample(std::size(kHeaders), d.between(1, 3));
        std::sort(headers.begin(), headers.end());
        std::string block;
        for (int64_t h : headers) block += "#include <" + std::string(kHeaders[h]) + ">\n";
        items.push_back(block);
        ++s;
    }
    for (; s < sentences; ++s) {
        double u = (double)d.between(0, 99);
        if (u < 10) {
            std::string name = std::string(d.pick(kCodeNouns));
            items.push_back("#define MAX_" + uppercase(name) + " " + std::to_string(d.between(1, 64) * 8) + "\n");
        } else if (u < 25) {
            int64_t field_type = d.between(0, 3);
            std::vector<int64_t> fields = d.sample(std::size(kFieldNames), d.between(2, 4));
            std::string block = "struct " + std::string(kStructNames[struct_names[structs++ % struct_names.size()]]) + " {\n";
            for (int64_t f : fields)
                block += "    " + std::string(kCodeTypes[d.chance(0.7) ? field_type : d.between(0, 3)]) + " " +
                         kFieldNames[f] + ";\n";
            items.push_back(block + "};\n");
        } else {
            items.push_back(code_function(d, functions));
        }
    }
    return join(items, "\n");
}

// ---- general: a short story -----------------------------------------------------------------------
//
// One character, one tense (past or present) per document. Noun phrases are recursive (a relative
// clause or a prepositional phrase may hang off a noun), verbs agree with their subject in number
// ("the dog chases", "the dogs chase"; "was" / "were"), irregular plurals and past tenses come
// from the word lists (children, mice; saw, brought), and "a" becomes "an" before a vowel.
struct Noun { const char* one; const char* many; bool animate; };
const Noun kNouns[] = {
    {"dog", "dogs", true}, {"cat", "cats", true}, {"bird", "birds", true}, {"child", "children", true},
    {"teacher", "teachers", true}, {"farmer", "farmers", true}, {"neighbor", "neighbors", true},
    {"fisherman", "fishermen", true}, {"woman", "women", true}, {"man", "men", true}, {"baker", "bakers", true},
    {"horse", "horses", true}, {"mouse", "mice", true}, {"owl", "owls", true}, {"artist", "artists", true},
    {"goose", "geese", true}, {"boat", "boats", false}, {"train", "trains", false}, {"letter", "letters", false},
    {"basket", "baskets", false}, {"apple", "apples", false}, {"lamp", "lamps", false}, {"book", "books", false},
    {"box", "boxes", false}, {"bus", "buses", false}, {"story", "stories", false}, {"key", "keys", false},
    {"umbrella", "umbrellas", false}, {"kite", "kites", false}, {"window", "windows", false},
    {"coat", "coats", false}, {"map", "maps", false}, {"egg", "eggs", false}, {"orange", "oranges", false},
    {"bicycle", "bicycles", false}, {"candle", "candles", false}, {"knife", "knives", false},
    {"leaf", "leaves", false}};
const char* const kPlaces[] = {"market", "river", "bridge", "station", "harbor", "library", "bakery", "village",
                               "hill", "park", "school", "square", "forest", "beach", "farm", "orchard",
                               "museum", "field", "lake", "old mill"};
const char* const kAdjectives[] = {"quiet", "old", "bright", "small", "green", "busy", "cold", "distant",
                                   "happy", "tired", "warm", "empty", "narrow", "heavy", "wooden", "red",
                                   "young", "careful", "loud", "gentle", "dusty", "broken", "strange", "clean",
                                   "tall", "wet", "sleepy", "golden", "ancient", "enormous", "icy", "elegant",
                                   "orange", "unusual", "angry", "silent", "yellow", "blue"};
struct Verb { const char* base; const char* third; const char* past; };
const Verb kTransitive[] = {
    {"watch", "watches", "watched"}, {"carry", "carries", "carried"}, {"find", "finds", "found"},
    {"see", "sees", "saw"}, {"follow", "follows", "followed"}, {"paint", "paints", "painted"},
    {"visit", "visits", "visited"}, {"help", "helps", "helped"}, {"meet", "meets", "met"},
    {"call", "calls", "called"}, {"clean", "cleans", "cleaned"}, {"open", "opens", "opened"},
    {"push", "pushes", "pushed"}, {"lift", "lifts", "lifted"}, {"wash", "washes", "washed"},
    {"sell", "sells", "sold"}, {"buy", "buys", "bought"}, {"miss", "misses", "missed"},
    {"chase", "chases", "chased"}, {"feed", "feeds", "fed"}, {"greet", "greets", "greeted"},
    {"count", "counts", "counted"}, {"fix", "fixes", "fixed"}, {"bring", "brings", "brought"},
    {"hold", "holds", "held"}, {"draw", "draws", "drew"}, {"catch", "catches", "caught"},
    {"hide", "hides", "hid"}, {"study", "studies", "studied"}, {"forget", "forgets", "forgot"}};
const Verb kMotion[] = {{"walk", "walks", "walked"}, {"run", "runs", "ran"}, {"hurry", "hurries", "hurried"},
                        {"wander", "wanders", "wandered"}, {"drive", "drives", "drove"}, {"ride", "rides", "rode"},
                        {"return", "returns", "returned"}, {"swim", "swims", "swam"}, {"go", "goes", "went"}};
const Verb kSay = {"say", "says", "said"}, kAsk = {"ask", "asks", "asked"}, kGo = {"go", "goes", "went"};
const char* const kMotionPrepositions[] = {"to", "toward", "past", "across", "along", "through", "around"};
struct Person { const char* name; bool she; };
const Person kPeople[] = {{"Anna", true}, {"Ben", false}, {"Clara", true}, {"David", false}, {"Elena", true},
                          {"Felix", false}, {"Grace", true}, {"Henry", false}, {"Iris", true}, {"Jonas", false},
                          {"Lena", true}, {"Marco", false}, {"Nora", true}, {"Oscar", false}, {"Paula", true},
                          {"Samuel", false}};
const char* const kTimesOfDay[] = {"morning", "afternoon", "evening", "night"};
const char* const kWeekdays[] = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
const char* const kSkyWords[] = {"sky", "air", "wind", "road", "water", "light"};
const char* const kHomeWays[] = {"before dark", "after dinner", "with a smile", "in the rain", "without a word",
                                 "by the long road"};

struct StoryWriter {
    explicit StoryWriter(Draw& draw) : d(draw) {}
    Draw& d;
    bool past = true;
    Person person{};

    std::string verb(const Verb& v, bool plural) const { return past ? v.past : plural ? v.base : v.third; }
    std::string be(bool plural) const { return past ? (plural ? "were" : "was") : (plural ? "are" : "is"); }
    std::string pronoun() const { return person.she ? "she" : "he"; }
    std::string possessive() const { return person.she ? "her" : "his"; }
    static std::string article_for(const std::string& next) {
        return std::string("aeiou").find(next[0]) != std::string::npos ? "an" : "a";
    }

    // A noun phrase; depth > 0 allows one relative clause or prepositional phrase.
    std::string noun_phrase(bool plural, bool animate_only, int64_t depth, bool indefinite = false) {
        const Noun* noun = &d.pick(kNouns);
        while (animate_only && !noun->animate) noun = &d.pick(kNouns);
        std::string head = plural ? noun->many : noun->one;
        if (d.chance(0.5)) head = std::string(d.pick(kAdjectives)) + " " + head;
        std::string det;
        if (plural) {
            const char* dets[] = {"the", "some", "two", "three", "many", "those"};
            det = indefinite ? dets[d.between(1, 4)] : d.chance(0.15) ? possessive() : d.pick(dets);
        } else {
            int64_t r = indefinite ? 1 : d.between(0, 9);
            det = r <= 4 ? (r == 1 || r == 2 ? article_for(head) : "the") : r <= 7 ? "the" : r == 8 ? "this" : possessive();
        }
        std::string phrase = det + " " + head;
        if (depth > 0 && d.chance(0.3)) {
            if (noun->animate && d.chance(0.6))
                phrase += " who " + verb(d.pick(kTransitive), plural) + " " + noun_phrase(d.chance(0.4), false, 0);
            else if (d.chance(0.5))
                phrase += " that " + be(plural) + " " + d.pick(kAdjectives);
            else
                phrase += std::string(d.chance(0.5) ? " near the " : " from the ") + d.pick(kPlaces);
        }
        return phrase;
    }
    std::string clause() {   // subject, verb, object
        bool plural = d.chance(0.4);
        return noun_phrase(plural, true, 1) + " " + verb(d.pick(kTransitive), plural) + " " +
               noun_phrase(d.chance(0.4), false, 1);
    }
    std::string pronoun_clause() {
        return pronoun() + " " + verb(d.pick(kTransitive), false) + " " + noun_phrase(d.chance(0.4), false, 1);
    }

    std::string sentence(int64_t kind) {
        const std::string name = person.name;
        switch (kind) {
            case 0: {   // the opening: when, who, where
                std::string when;
                if (d.chance(0.5)) {   // "On a cold morning in March" (the article agrees with the adjective)
                    std::string adjective = d.pick(kAdjectives);
                    when = "On " + article_for(adjective) + " " + adjective + " " + d.pick(kTimesOfDay) + " in " +
                           d.pick(kMonths);
                } else {
                    when = d.chance(0.5) ? "Early one " + std::string(d.pick(kWeekdays))
                                         : "Late on " + std::string(d.pick(kWeekdays));
                }
                return when + ", " + name + " " + verb(d.pick(kMotion), false) + " " + d.pick(kMotionPrepositions) +
                       " the " + d.pick(kPlaces) + ".";
            }
            case 1: return capitalized(clause()) + ".";
            case 2: {
                bool plural = d.chance(0.5);
                return capitalized(pronoun_clause()) + " because " + noun_phrase(plural, false, 0) + " " + be(plural) +
                       " " + d.pick(kAdjectives) + ".";
            }
            case 3: {   // speech is in the present tense; the narration keeps the document's tense
                bool plural = d.chance(0.5);
                const Noun& noun = d.pick(kNouns);
                std::string things = plural ? noun.many : noun.one;
                switch (d.between(0, 2)) {
                    case 0:
                        return "\"The " + things + " " + (plural ? "are " : "is ") + d.pick(kAdjectives) + " today,\" " +
                               verb(kSay, false) + " " + name + ".";
                    case 1:
                        return "\"Where " + std::string(plural ? "are" : "is") + " the " + things + "?\" " +
                               verb(kAsk, false) + " " + name + ".";
                    default:
                        return "\"We should " + std::string(d.pick(kTransitive).base) + " the " + things + ",\" " +
                               name + " " + verb(kSay, false) + ".";
                }
            }
            case 4: {
                bool plural = d.chance(0.5);
                return "There " + be(plural) + " " + noun_phrase(plural, false, 0, true) + " near the " +
                       d.pick(kPlaces) + ".";
            }
            case 5: return capitalized(clause()) + (d.chance(0.5) ? ", but " : ", and ") + pronoun_clause() + ".";
            case 6: {
                const Noun& noun = d.pick(kNouns);
                return "The " + std::string(d.pick(kSkyWords)) + " " + be(false) + " " + d.pick(kAdjectives) +
                       ", and the " + noun.many + " " + be(true) + " " + d.pick(kAdjectives) + ".";
            }
            case 7: return "When " + clause() + ", " + name + " " + verb(d.pick(kTransitive), false) + " " +
                           noun_phrase(d.chance(0.4), false, 0) + ".";
            default: return name + " " + verb(kGo, false) + " home " + d.pick(kHomeWays) + ".";
        }
    }
};

std::string general_document(int64_t sentences, Generator& gen) {
    Draw d(gen);
    StoryWriter w(d);
    w.past = d.chance(0.6);
    w.person = d.pick(kPeople);
    std::vector<std::string> parts = {w.sentence(0)};
    for (int64_t s = 1; s < sentences; ++s) parts.push_back(w.sentence(s + 1 == sentences && d.chance(0.3) ? 8 : d.between(1, 7)));
    // Longer stories get a paragraph break after the fourth sentence.
    std::string text = join(std::vector<std::string>(parts.begin(), parts.begin() + std::min<size_t>(4, parts.size())), " ");
    if (parts.size() > 4) text += "\n" + join(std::vector<std::string>(parts.begin() + 4, parts.end()), " ");
    return text + "\n";
}

}  // namespace

std::string synthetic_document(int64_t domain, int64_t sentences, Generator& gen) {
    if (sentences < 1) throw std::invalid_argument("synthetic_document: sentences = " + std::to_string(sentences));
    switch (domain) {
        case 0: return finance_document(sentences, gen);
        case 1: return legal_document(sentences, gen);
        case 2: return code_document(sentences, gen);
        case 3: return general_document(sentences, gen);
        default:
            throw std::invalid_argument("synthetic_document: domain " + std::to_string(domain) + " is not in [0, 4)");
    }
}

}  // namespace mg::demo
