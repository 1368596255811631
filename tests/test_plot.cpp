// tests/test_plot.cpp: the plotting module (demos/common/plot.h). Charts are written to a temporary
// folder and read back with stb_image, then checked by looking at their pixels: size, ink, the
// colours of the series, where a bar of known height lands, where text puts its ink. The error
// cases check that the message names the function (and the file).
#include "demos/common/font.h"
#include "demos/common/plot.h"

#include <doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#pragma GCC diagnostic pop

namespace fs = std::filesystem;
using namespace mg::plot;

namespace {

// A PNG read back from disk.
struct Image {
    int width = 0, height = 0;
    std::vector<unsigned char> rgb;  // (height, width, 3)
    Color at(int x, int y) const {
        std::size_t i = (static_cast<std::size_t>(y) * width + x) * 3;
        return {rgb[i], rgb[i + 1], rgb[i + 2]};
    }
    long count(Color c) const {
        long n = 0;
        for (int y = 0; y < height; ++y)
            for (int x = 0; x < width; ++x) n += at(x, y) == c;
        return n;
    }
    long non_white() const { return static_cast<long>(width) * height - count(kWhite); }
};

Image read_png(const fs::path& path) {
    int w = 0, h = 0, channels = 0;
    unsigned char* data = stbi_load(path.string().c_str(), &w, &h, &channels, 3);
    REQUIRE_MESSAGE(data != nullptr, "cannot read back " << path.string());
    Image image{w, h, std::vector<unsigned char>(data, data + static_cast<std::size_t>(w) * h * 3)};
    stbi_image_free(data);
    return image;
}

// A fresh, empty folder for this test run.
fs::path temp_dir() {
    static const fs::path dir = [] {
        fs::path d = fs::temp_directory_path() / "moegrad_test_plot";
        fs::remove_all(d);
        fs::create_directories(d);
        return d;
    }();
    return dir;
}

// The bounding box of the pixels of one colour (x0, y0 inclusive; x1, y1 exclusive).
struct Box {
    int x0 = 1 << 30, y0 = 1 << 30, x1 = -1, y1 = -1;
};
template <class Pixel>
Box ink_box(int width, int height, Pixel is_ink) {
    Box box;
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x)
            if (is_ink(x, y)) {
                box.x0 = std::min(box.x0, x);
                box.y0 = std::min(box.y0, y);
                box.x1 = std::max(box.x1, x + 1);
                box.y1 = std::max(box.y1, y + 1);
            }
    return box;
}

// Runs f and returns the message of the std::runtime_error it throws ("" when it throws none).
template <class F>
std::string error_of(F f) {
    try {
        f();
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST_CASE("plot: the font has a glyph with ink for every printable character") {
    for (int c = 33; c <= 126; ++c) {
        const font::Glyph& g = font::glyph(static_cast<char>(c));
        int ink = 0;
        for (int row = 0; row < font::kGlyphHeight; ++row)
            for (int col = 0; col < font::kGlyphWidth; ++col) ink += g.ink(col, row);
        CHECK_MESSAGE(ink > 0, "glyph '" << static_cast<char>(c) << "' is empty");
        CHECK(g.width >= 1);
        CHECK(g.left + g.width <= font::kGlyphWidth);
    }
    const font::Glyph& space = font::glyph(' ');
    for (int row = 0; row < font::kGlyphHeight; ++row) CHECK(space.rows[row] == 0);
    // Characters outside printable ASCII are drawn as '?'.
    CHECK(&font::glyph('\t') == &font::glyph('?'));
    CHECK(&font::glyph(static_cast<char>(200)) == &font::glyph('?'));
}

TEST_CASE("plot: text puts its ink where its box says") {
    // 'H' is 5 columns of ink and 7 rows (capitals use rows 0..6 of the 9).
    CHECK(Canvas::text_width("H", 1) == 5);
    CHECK(Canvas::text_width("H", 3) == 15);
    CHECK(Canvas::text_width("HI", 2) == (5 + 1 + 3) * 2);  // 'I' is 3 columns wide, one blank between
    CHECK(Canvas::text_width("", 2) == 0);
    CHECK(Canvas::text_height(2) == 18);
    CHECK(Canvas::cap_height(2) == 14);

    for (int scale = 1; scale <= 3; ++scale) {
        Canvas canvas(80, 80);
        canvas.text(10, 20, "H", kBlack, scale);
        Box box = ink_box(80, 80, [&](int x, int y) { return canvas.pixel(x, y) == kBlack; });
        CHECK(box.x0 == 10);
        CHECK(box.y0 == 20);
        CHECK(box.x1 == 10 + 5 * scale);
        CHECK(box.y1 == 20 + 7 * scale);
        // The crossbar of the H: row 3, all 5 columns.
        CHECK(canvas.pixel(10 + 2 * scale, 20 + 3 * scale) == kBlack);
        CHECK(canvas.pixel(10 + 2 * scale, 20) == kWhite);  // the gap at the top between the legs
    }
    // A descender goes below the capitals: 'g' reaches row 8.
    {
        Canvas canvas(40, 40);
        canvas.text(5, 5, "g", kBlack, 1);
        Box box = ink_box(40, 40, [&](int x, int y) { return canvas.pixel(x, y) == kBlack; });
        CHECK(box.y1 == 5 + 9);
    }
    // Turned text: "H" becomes 7 wide and 5 tall; the first letter of a word ends up at the bottom.
    {
        Canvas canvas(60, 60);
        canvas.text_vertical(5, 5, "H", kBlack, 1);
        Box box = ink_box(60, 60, [&](int x, int y) { return canvas.pixel(x, y) == kBlack; });
        CHECK(box.x0 == 5);
        CHECK(box.x1 == 5 + 7);
        CHECK(box.y0 == 5);
        CHECK(box.y1 == 5 + 5);

        // In "L." the first column of the L (its stem, 7 rows) becomes the bottom row of the turned
        // box, and the last column of the full stop (2 rows) becomes its top row.
        Canvas word(60, 60);
        word.text_vertical(5, 5, "L.", kBlack, 1);
        int width = Canvas::text_width("L.", 1);
        int ink_bottom_row = 0, ink_top_row = 0;
        for (int x = 5; x < 5 + 9; ++x) {
            ink_bottom_row += word.pixel(x, 5 + width - 1) == kBlack;
            ink_top_row += word.pixel(x, 5) == kBlack;
        }
        CHECK(ink_bottom_row == 7);
        CHECK(ink_top_row == 2);
    }
}

TEST_CASE("plot: nice ticks step by 1, 2 or 5 times a power of ten") {
    std::vector<double> ticks = nice_ticks(0.3, 2.3, 6);
    REQUIRE(ticks.size() == 6);
    for (int i = 0; i < 6; ++i) CHECK(ticks[i] == doctest::Approx(0.5 * i));
    ticks = nice_ticks(0, 299, 7);
    REQUIRE(ticks.size() == 7);
    CHECK(ticks.front() == 0);
    CHECK(ticks.back() == doctest::Approx(300));
    for (double lo : {-3.7, 0.0, 0.001, 12.0, 1e5})
        for (double span : {1e-3, 0.7, 42.0, 1e4}) {
            for (int max_ticks : {3, 6, 10}) {
                std::vector<double> t = nice_ticks(lo, lo + span, max_ticks);
                REQUIRE(t.size() >= 2);
                CHECK(static_cast<int>(t.size()) <= max_ticks);
                CHECK(t.front() <= lo);
                CHECK(t.back() >= lo + span);
                double step = t[1] - t[0];
                double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
                CHECK(
                    (std::abs(mantissa - 1) < 1e-6 || std::abs(mantissa - 2) < 1e-6 || std::abs(mantissa - 5) < 1e-6));
            }
        }
    // One value: the axis is widened around it.
    ticks = nice_ticks(5, 5, 6);
    CHECK(ticks.front() < 5);
    CHECK(ticks.back() > 5);

    std::vector<double> logs = log_ticks(0.3, 2.3, 8);
    std::vector<double> expected = {0.2, 0.5, 1, 2, 5};
    REQUIRE(logs.size() == expected.size());
    for (std::size_t i = 0; i < logs.size(); ++i) CHECK(logs[i] == doctest::Approx(expected[i]));
    logs = log_ticks(1e-3, 1e3, 8);  // 6 decades: powers of ten only
    REQUIRE(logs.size() == 7);
    CHECK(logs.front() == doctest::Approx(1e-3));
    CHECK(logs.back() == doctest::Approx(1e3));
    CHECK_THROWS(log_ticks(0, 1, 8));

    CHECK(format_tick(0.05, 0.05) == "0.05");
    CHECK(format_tick(0.5, 0.5) == "0.5");
    CHECK(format_tick(50, 50) == "50");
    CHECK(format_tick(1.5, 0.5) == "1.5");
    CHECK(format_tick(-1e-17, 0.1) == "0.0");  // never "-0.0"
    CHECK(format_tick(2e6, 1e6) == "2e+06");
}

TEST_CASE("plot: line chart writes a picture with every series colour") {
    std::vector<Series> series;
    for (int k = 0; k < 3; ++k) {
        Series s{"series " + std::to_string(k), {}, {}};
        for (int i = 0; i < 300; ++i) {
            s.x.push_back(i);
            s.y.push_back(2.0 * std::exp(-i / 50.0) + 0.2 * k);
        }
        series.push_back(s);
    }
    fs::path path = temp_dir() / "nested" / "folder" / "loss.png";  // parent folders are created
    line_chart(path.string(), {.title = "loss", .xlabel = "step", .ylabel = "loss", .width = 640, .height = 400},
               series);
    Image image = read_png(path);
    CHECK(image.width == 640);
    CHECK(image.height == 400);
    CHECK(image.non_white() > 2000);
    for (int k = 0; k < 3; ++k) CHECK_MESSAGE(image.count(palette(k)) > 300, "colour of series " << k);
    CHECK(image.count(palette(3)) == 0);

    // A log axis, NaN and infinite values, a non-positive value on the log axis: skipped, not fatal.
    series[0].y[10] = std::numeric_limits<double>::quiet_NaN();
    series[1].y[20] = std::numeric_limits<double>::infinity();
    series[2].y[30] = -1;
    fs::path log_path = temp_dir() / "loss_log.png";
    line_chart(log_path.string(), {.title = "loss", .log_y = true}, series);
    Image log_image = read_png(log_path);
    for (int k = 0; k < 3; ++k) CHECK(log_image.count(palette(k)) > 300);
}

TEST_CASE("plot: line chart handles empty series and single points") {
    fs::path empty = temp_dir() / "empty.png";
    line_chart(empty.string(), {.title = "nothing"}, {{"train", {}, {}}});
    CHECK(read_png(empty).non_white() > 0);
    line_chart(empty.string(), {.title = "nothing"}, {});
    CHECK(read_png(empty).width == 800);

    fs::path single = temp_dir() / "single.png";
    line_chart(single.string(), {}, {{"", {3.0}, {0.7}}});
    Image image = read_png(single);
    CHECK(image.count(palette(0)) > 10);  // the lone point is drawn as a dot
}

TEST_CASE("plot: a bar of known height covers the expected columns") {
    // One unnamed series (so no legend swatch shares its colour): a bar of 1.0 and a bar of 0.5.
    fs::path path = temp_dir() / "bars.png";
    bar_chart(path.string(), {.title = "bars", .xlabel = "expert", .ylabel = "share"}, {"a", "b"}, {{"", {1.0, 0.5}}});
    Image image = read_png(path);
    CHECK(image.width == 800);
    CHECK(image.height == 500);
    Color blue = palette(0);
    Box left = ink_box(image.width / 2, image.height, [&](int x, int y) { return image.at(x, y) == blue; });
    Box right = ink_box(image.width, image.height,
                        [&](int x, int y) { return x >= image.width / 2 && image.at(x, y) == blue; });
    REQUIRE(left.x1 > 0);
    REQUIRE(right.x1 > 0);
    // Each bar is centred in its half of the plot, and both stand on the same baseline.
    CHECK(left.x1 <= image.width / 2);
    CHECK(right.x0 >= image.width / 2);
    CHECK(left.y1 == right.y1);
    int tall = left.y1 - left.y0, short_bar = right.y1 - right.y0;
    CHECK(tall > 100);
    CHECK(static_cast<double>(short_bar) / tall == doctest::Approx(0.5).epsilon(0.02));
    // The bar is solid: every pixel of its middle column, from its top to the baseline.
    int middle = (left.x0 + left.x1) / 2;
    for (int y = left.y0; y < left.y1; ++y) CHECK(image.at(middle, y) == blue);
    // Same width for both bars.
    CHECK(left.x1 - left.x0 == doctest::Approx(right.x1 - right.x0).epsilon(0.05));

    // Grouped bars with a reference line: every series colour appears.
    fs::path grouped = temp_dir() / "utilization.png";
    bar_chart(grouped.string(), {.title = "utilization"}, {"e0", "e1", "e2", "e3"},
              {{"A", {0.6, 0.3, 0.05, 0.05}}, {"B", {0.25, 0.25, 0.25, 0.25}}, {"C", {0.3, 0.2, 0.2, 0.3}}}, 0.25,
              "uniform 1/E");
    Image g = read_png(grouped);
    for (int k = 0; k < 3; ++k) CHECK(g.count(palette(k)) > 500);
}

TEST_CASE("plot: heatmap colours follow the values") {
    fs::path path = temp_dir() / "heatmap.png";
    heatmap(path.string(), {.title = "routing", .xlabel = "class", .ylabel = "expert"}, {"e0", "e1"}, {"c0", "c1"},
            {{0.0, 1.0}, {1.0, 0.0}}, false);
    Image image = read_png(path);
    CHECK(image.width == 800);
    long low = image.count(colormap(0.0)), high = image.count(colormap(1.0));
    CHECK(low > 5000);  // two large cells each
    CHECK(high > 5000);
    // The top left cell holds 0 (dark), the top right one 1 (bright): find them along one row.
    Box dark = ink_box(image.width, image.height, [&](int x, int y) { return image.at(x, y) == colormap(0.0); });
    Box bright = ink_box(image.width, image.height, [&](int x, int y) { return image.at(x, y) == colormap(1.0); });
    int row = dark.y0 + 5;
    bool dark_then_bright = false;
    for (int x = dark.x0; x < bright.x1; ++x)
        if (image.at(x, row) == colormap(1.0)) dark_then_bright = image.at(dark.x0, row) == colormap(0.0);
    CHECK(dark_then_bright);

    // With numbers in the cells, ragged labels, NaN: still a picture.
    heatmap(path.string(), {.title = "routing"}, {"e0", "e1"}, {"a", "b", "c"},
            {{0.1, std::numeric_limits<double>::quiet_NaN(), 0.3}, {0.4, 0.5, 0.6}});
    CHECK(read_png(path).non_white() > 10000);
}

TEST_CASE("plot: graph draws boxes and arrows") {
    fs::path path = temp_dir() / "graph.png";
    graph(path.string(), {.title = "modules"}, {{"demos"}, {"nn"}, {"engine"}}, {{"demos", "nn"}, {"nn", "engine"}});
    Image image = read_png(path);
    CHECK(image.non_white() > 1000);
    CHECK(error_of([&] { graph(path.string(), {}, {{"a"}}, {{"a", "b"}}); }).find("graph") != std::string::npos);
    CHECK(error_of([&] { graph(path.string(), {}, {{"a"}, {"a"}}, {}); }).find("twice") != std::string::npos);
}

TEST_CASE("plot: inconsistent inputs and unwritable files throw, naming the function and the file") {
    std::string path = (temp_dir() / "bad.png").string();
    std::string message = error_of([&] { line_chart(path, {}, {{"train", {1, 2, 3}, {1, 2}}}); });
    CHECK(message.find("mg::plot::line_chart") != std::string::npos);
    CHECK(message.find(path) != std::string::npos);
    CHECK(message.find("'train'") != std::string::npos);

    message = error_of([&] { bar_chart(path, {}, {"a", "b"}, {{"s", {1.0}}}); });
    CHECK(message.find("mg::plot::bar_chart") != std::string::npos);

    message = error_of([&] { heatmap(path, {}, {"r0", "r1"}, {"c0", "c1"}, {{1, 2}, {3}}); });
    CHECK(message.find("mg::plot::heatmap") != std::string::npos);
    CHECK(message.find("row 1") != std::string::npos);
    message = error_of([&] { heatmap(path, {}, {"r0"}, {"c0"}, {{1}, {2}}); });
    CHECK(message.find("mg::plot::heatmap") != std::string::npos);

    message = error_of([&] { line_chart(path, {.width = 10, .height = 10}, {}); });
    CHECK(message.find("mg::plot::line_chart") != std::string::npos);

    // A path whose "folder" is a plain file cannot be written.
    fs::path blocker = temp_dir() / "blocker";
    std::ofstream(blocker) << "not a folder";
    std::string unwritable = (blocker / "plot.png").string();
    message = error_of([&] { line_chart(unwritable, {}, {{"train", {1, 2}, {1, 2}}}); });
    CHECK(message.find("mg::plot::line_chart") != std::string::npos);
    CHECK(message.find(unwritable) != std::string::npos);
    message = error_of([&] { bar_chart(unwritable, {}, {"a"}, {{"s", {1.0}}}); });
    CHECK(message.find("mg::plot::bar_chart") != std::string::npos);
    message = error_of([&] { heatmap(unwritable, {}, {"r"}, {"c"}, {{1.0}}); });
    CHECK(message.find("mg::plot::heatmap") != std::string::npos);
}
