// demos/common/plot.cpp: the plotting module of plot.h, drawn pixel by pixel.
//
// Reading order: the Canvas (pixels, lines; its text methods are in font.cpp), the ticks and their
// labels, the pieces every chart shares (layout of title / labels / plot area, axes, legend), then
// one section per chart kind. Each chart is drawn in the same order: work out the data ranges and
// ticks, lay out the frame, draw grid and axes, draw the data, then the legend where the data is
// not (see place_legend_inside).
#include "demos/common/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <stdexcept>

// stb_image_write is a single-header library: this is the one file that holds its code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wconversion"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace mg::plot {

// ================================================================================================
// Colours

Color palette(int index) {
    // Okabe & Ito (2008), "Color Universal Design": blue, orange, bluish green, vermillion,
    // reddish purple, sky blue, black.
    static constexpr Color colors[] = {{0, 114, 178},   {230, 159, 0},  {0, 158, 115}, {213, 94, 0},
                                       {204, 121, 167}, {86, 180, 233}, {0, 0, 0}};
    constexpr int n = static_cast<int>(std::size(colors));
    return colors[((index % n) + n) % n];
}

Color colormap(double t) {
    // Nine samples of viridis, linearly interpolated.
    static constexpr Color stops[] = {{68, 1, 84},    {71, 44, 122}, {59, 81, 139},  {44, 113, 142}, {33, 144, 141},
                                      {39, 173, 129}, {92, 200, 99}, {170, 220, 50}, {253, 231, 37}};
    constexpr int n = static_cast<int>(std::size(stops));
    if (!std::isfinite(t)) t = 0;
    t = std::clamp(t, 0.0, 1.0) * (n - 1);
    int i = std::min(static_cast<int>(t), n - 2);
    double f = t - i;
    auto mix = [f](std::uint8_t a, std::uint8_t b) { return static_cast<std::uint8_t>(std::lround(a + (b - a) * f)); };
    return {mix(stops[i].r, stops[i + 1].r), mix(stops[i].g, stops[i + 1].g), mix(stops[i].b, stops[i + 1].b)};
}

namespace {

constexpr Color kTextColor{25, 25, 25};
constexpr Color kAxisColor{60, 60, 60};
constexpr Color kGridColor{228, 228, 228};
constexpr Color kLegendBorder{160, 160, 160};
constexpr Color kMissingColor{205, 205, 205};
constexpr Color kReferenceColor{50, 50, 50};

constexpr int kPad = 14;        // blank margin around the whole picture
constexpr int kTitleScale = 3;  // font scales: the title is drawn larger than everything else
constexpr int kLabelScale = 2;  // axis labels, tick labels, legend, values in cells

// A colour mixed with white: amount 0 = unchanged, 1 = white.
Color lighten(Color c, double amount) {
    auto mix = [amount](std::uint8_t v) { return static_cast<std::uint8_t>(std::lround(v + (255 - v) * amount)); };
    return {mix(c.r), mix(c.g), mix(c.b)};
}

// Perceived brightness 0..255, to choose black or white text on a coloured cell.
double luminance(Color c) {
    return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b;
}

[[noreturn]] void fail(const std::string& function, const std::string& path, const std::string& what) {
    throw std::runtime_error("mg::plot::" + function + "(" + path + "): " + what);
}

}  // namespace

// ================================================================================================
// Canvas

Canvas::Canvas(int width, int height, Color background) : width_(width), height_(height) {
    if (width <= 0 || height <= 0 || width > 16384 || height > 16384)
        throw std::runtime_error("mg::plot::Canvas: image size " + std::to_string(width) + " x " +
                                 std::to_string(height) + " is not between 1 and 16384");
    rgb_.resize(static_cast<std::size_t>(width) * height * 3);
    for (std::size_t i = 0; i < rgb_.size(); i += 3) {
        rgb_[i] = background.r;
        rgb_[i + 1] = background.g;
        rgb_[i + 2] = background.b;
    }
}

Color Canvas::pixel(int x, int y) const {
    if (x < 0 || y < 0 || x >= width_ || y >= height_)
        throw std::out_of_range("mg::plot::Canvas::pixel: (" + std::to_string(x) + ", " + std::to_string(y) +
                                ") is outside the image");
    std::size_t i = (static_cast<std::size_t>(y) * width_ + x) * 3;
    return {rgb_[i], rgb_[i + 1], rgb_[i + 2]};
}

void Canvas::set_pixel(int x, int y, Color color) {
    if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
    std::size_t i = (static_cast<std::size_t>(y) * width_ + x) * 3;
    rgb_[i] = color.r;
    rgb_[i + 1] = color.g;
    rgb_[i + 2] = color.b;
}

void Canvas::fill_rect(int x, int y, int w, int h, Color color) {
    int x0 = std::max(x, 0), y0 = std::max(y, 0);
    int x1 = std::min(x + w, width_), y1 = std::min(y + h, height_);
    for (int py = y0; py < y1; ++py)
        for (int px = x0; px < x1; ++px) set_pixel(px, py, color);
}

void Canvas::rect_outline(int x, int y, int w, int h, Color color, int thickness) {
    fill_rect(x, y, w, thickness, color);
    fill_rect(x, y + h - thickness, w, thickness, color);
    fill_rect(x, y, thickness, h, color);
    fill_rect(x + w - thickness, y, thickness, h, color);
}

void Canvas::line(double x0, double y0, double x1, double y1, Color color, int thickness, int dash) {
    // Walk the line one pixel at a time along its longer direction and stamp a small square
    // (a disc from 4 pixels up, so thick lines get round joins) at each step.
    double dx = x1 - x0, dy = y1 - y0;
    int steps = std::max(1, static_cast<int>(std::ceil(std::max(std::abs(dx), std::abs(dy)))));
    int lo = -(thickness - 1) / 2, hi = thickness / 2;
    double radius2 = thickness * thickness / 4.0 + 0.25;
    for (int i = 0; i <= steps; ++i) {
        if (dash > 0 && (i / dash) % 2 == 1) continue;
        int cx = static_cast<int>(std::lround(x0 + dx * i / steps));
        int cy = static_cast<int>(std::lround(y0 + dy * i / steps));
        for (int oy = lo; oy <= hi; ++oy)
            for (int ox = lo; ox <= hi; ++ox)
                if (thickness < 4 || ox * ox + oy * oy <= radius2) set_pixel(cx + ox, cy + oy, color);
    }
}

void Canvas::fill_triangle(double x0, double y0, double x1, double y1, double x2, double y2, Color color) {
    // A pixel is inside when its centre is on the same side of all three edges.
    auto edge = [](double ax, double ay, double bx, double by, double px, double py) {
        return (bx - ax) * (py - ay) - (by - ay) * (px - ax);
    };
    int min_x = static_cast<int>(std::floor(std::min({x0, x1, x2})));
    int max_x = static_cast<int>(std::ceil(std::max({x0, x1, x2})));
    int min_y = static_cast<int>(std::floor(std::min({y0, y1, y2})));
    int max_y = static_cast<int>(std::ceil(std::max({y0, y1, y2})));
    for (int py = min_y; py <= max_y; ++py)
        for (int px = min_x; px <= max_x; ++px) {
            double cx = px + 0.5, cy = py + 0.5;
            double e0 = edge(x0, y0, x1, y1, cx, cy), e1 = edge(x1, y1, x2, y2, cx, cy),
                   e2 = edge(x2, y2, x0, y0, cx, cy);
            if ((e0 >= 0 && e1 >= 0 && e2 >= 0) || (e0 <= 0 && e1 <= 0 && e2 <= 0)) set_pixel(px, py, color);
        }
}

void Canvas::save_png(const std::string& path, const std::string& function) const {
    if (path.empty()) throw std::runtime_error(function + ": the PNG path is empty");
    std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
        std::error_code error;
        std::filesystem::create_directories(parent, error);
        if (error)
            throw std::runtime_error(function + "(" + path + "): cannot create the folder '" + parent.string() +
                                     "': " + error.message());
    }
    if (!stbi_write_png(path.c_str(), width_, height_, 3, rgb_.data(), width_ * 3))
        throw std::runtime_error(function + "(" + path +
                                 "): cannot write the PNG file (does the folder exist, is it writable?)");
}

// ================================================================================================
// Ticks

std::vector<double> nice_ticks(double lo, double hi, int max_ticks) {
    if (!std::isfinite(lo) || !std::isfinite(hi))
        throw std::runtime_error("mg::plot::nice_ticks: the range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                 "] is not finite");
    if (lo > hi) std::swap(lo, hi);
    max_ticks = std::max(max_ticks, 2);
    if (hi - lo <= 1e-12 * std::max(1.0, std::abs(lo))) {  // one value: widen around it
        double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
        lo -= pad;
        hi += pad;
    }
    // The step is m * 10^k with m in {1, 2, 5}: the smallest one that needs at most max_ticks ticks
    // once the ends are rounded outwards to multiples of the step.
    double magnitude = std::pow(10.0, std::floor(std::log10((hi - lo) / (max_ticks - 1))));
    for (double m : {1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0}) {
        double step = m * magnitude;
        double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
        int count = static_cast<int>(std::lround(last - first)) + 1;
        if (count > max_ticks) continue;
        std::vector<double> ticks;
        for (int i = 0; i < count; ++i) {
            double v = (first + i) * step;  // multiply (not add up steps) so values stay exact-ish
            ticks.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
        }
        return ticks;
    }
    return {lo, hi};  // not reached for finite ranges
}

std::vector<double> log_ticks(double lo, double hi, int max_ticks) {
    if (!(lo > 0) || !(hi > 0) || !std::isfinite(lo) || !std::isfinite(hi))
        throw std::runtime_error("mg::plot::log_ticks: the range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                 "] must be positive and finite");
    if (lo > hi) std::swap(lo, hi);
    if (hi / lo < 1.0 + 1e-9) {
        lo /= 1.5;
        hi *= 1.5;
    }
    // First try 1, 2, 5 x 10^k: the axis runs from the largest such value <= lo to the smallest >= hi.
    int e0 = static_cast<int>(std::floor(std::log10(lo))) - 1, e1 = static_cast<int>(std::ceil(std::log10(hi))) + 1;
    std::vector<double> candidates;
    for (int e = e0; e <= e1; ++e)
        for (double m : {1.0, 2.0, 5.0}) candidates.push_back(m * std::pow(10.0, e));
    double first = candidates.front(), last = candidates.back();
    for (double v : candidates)
        if (v <= lo * (1 + 1e-9)) first = v;
    for (auto it = candidates.rbegin(); it != candidates.rend(); ++it)
        if (*it >= hi * (1 - 1e-9)) last = *it;
    std::vector<double> ticks;
    for (double v : candidates)
        if (v >= first * (1 - 1e-9) && v <= last * (1 + 1e-9)) ticks.push_back(v);
    if (static_cast<int>(ticks.size()) <= max_ticks) return ticks;
    // Too many: powers of ten only, every `every`-th one.
    int d0 = static_cast<int>(std::floor(std::log10(lo) + 1e-9)),
        d1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
    int every = 1;
    while ((d1 - d0 + every - 1) / every + 1 > std::max(max_ticks, 2)) ++every;
    d0 = static_cast<int>(std::floor(static_cast<double>(d0) / every)) * every;
    ticks.clear();
    for (int e = d0; e < d1 + every; e += every) ticks.push_back(std::pow(10.0, e));
    return ticks;
}

std::string format_tick(double value, double step) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    step = std::abs(step);
    if (step > 0 && std::abs(value) < step * 1e-9) value = 0;  // never "-0.00"
    char buffer[64];
    double magnitude = std::max(std::abs(value), step);
    if (magnitude >= 1e6 || (step > 0 && step < 1e-4) || (step == 0 && value != 0 && std::abs(value) < 1e-4)) {
        std::snprintf(buffer, sizeof buffer, "%g", value);
    } else {
        // As many decimals as the step has: 0.05 -> 2, 0.5 -> 1, 5 or 50 -> 0.
        int decimals = step > 0 ? std::clamp(static_cast<int>(std::ceil(-std::log10(step) - 1e-9)), 0, 10) : 2;
        std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
    }
    return buffer;
}

namespace {

// The label of a value written on a bar or in a heatmap cell: integers as integers, else two
// decimals below 10, one below 100, none above.
std::string format_value(double value, double largest_magnitude) {
    if (!std::isfinite(value)) return format_tick(value, 1);
    char buffer[64];
    if (std::abs(value - std::round(value)) < 1e-9 && std::abs(value) < 1e6)
        std::snprintf(buffer, sizeof buffer, "%.0f", value);
    else if (largest_magnitude >= 1e6 || (largest_magnitude < 0.01 && value != 0))
        std::snprintf(buffer, sizeof buffer, "%.2g", value);
    else
        std::snprintf(buffer, sizeof buffer, "%.*f",
                      largest_magnitude < 10    ? 2
                      : largest_magnitude < 100 ? 1
                                                : 0,
                      value);
    return buffer;
}

// ================================================================================================
// What every chart with axes shares: layout, axes, legend

struct Rect {
    int x = 0, y = 0, w = 0, h = 0;
    int right() const { return x + w; }
    int bottom() const { return y + h; }
};

// Maps data values to pixels along one axis: value lo goes to pixel_lo, hi to pixel_hi (for a y
// axis pixel_lo is the bottom, the larger pixel number).
struct AxisScale {
    double lo = 0, hi = 1;
    bool log = false;
    double pixel_lo = 0, pixel_hi = 1;
    double to_pixel(double v) const {
        double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
        return pixel_lo + t * (pixel_hi - pixel_lo);
    }
};

// The largest font scale (3, 2, then 1) at which `s` fits in `room` pixels.
int fitting_scale(std::string_view s, int room, int largest) {
    for (int scale = largest; scale > 1; --scale)
        if (Canvas::text_width(s, scale) <= room) return scale;
    return 1;
}

// Layout of a chart with a y axis on the left and an x axis at the bottom:
//
//     pad | title                                  |
//         | [legend strip, when the legend goes above the plot]
//   ylabel  y tick labels -| plot area              |
//         |                 x tick labels           |
//         |                 xlabel                  | pad
struct Frame {
    Rect plot;
    int title_scale = kTitleScale;
    int legend_strip_y = 0;  // top of the legend strip (when there is one)
};

Frame layout_frame(const Axes& axes, int widest_y_label, int x_labels_height, int legend_strip_height,
                   int right_margin) {
    Frame frame;
    frame.title_scale = fitting_scale(axes.title, axes.width - 2 * kPad, kTitleScale);
    int top = kPad;
    if (!axes.title.empty()) top += Canvas::text_height(frame.title_scale) + 8;
    frame.legend_strip_y = top;
    if (legend_strip_height > 0) top += legend_strip_height + 8;
    top += Canvas::cap_height(kLabelScale) / 2 + 4;  // room for the top y tick label
    int left = kPad + widest_y_label + 10;
    if (!axes.ylabel.empty()) left += Canvas::text_height(kLabelScale) + 10;
    int bottom = axes.height - kPad - x_labels_height - 10;
    if (!axes.xlabel.empty()) bottom -= Canvas::text_height(kLabelScale) + 8;
    int right = axes.width - kPad - right_margin;
    frame.plot = {left, top, std::max(right - left, 10), std::max(bottom - top, 10)};
    return frame;
}

// Title centred at the top, xlabel centred under the plot, ylabel turned, left of the tick labels.
void draw_titles(Canvas& canvas, const Axes& axes, const Frame& frame) {
    if (!axes.title.empty()) {
        int w = Canvas::text_width(axes.title, frame.title_scale);
        canvas.text(std::max(kPad, (axes.width - w) / 2), kPad, axes.title, kTextColor, frame.title_scale);
    }
    if (!axes.xlabel.empty()) {
        int w = Canvas::text_width(axes.xlabel, kLabelScale);
        int center = frame.plot.x + frame.plot.w / 2;
        canvas.text(std::clamp(center - w / 2, kPad, std::max(kPad, axes.width - kPad - w)),
                    axes.height - kPad - Canvas::text_height(kLabelScale), axes.xlabel, kTextColor, kLabelScale);
    }
    if (!axes.ylabel.empty()) {
        int h = Canvas::text_width(axes.ylabel, kLabelScale);
        int center = frame.plot.y + frame.plot.h / 2;
        canvas.text_vertical(kPad, std::clamp(center - h / 2, kPad, std::max(kPad, axes.height - kPad - h)),
                             axes.ylabel, kTextColor, kLabelScale);
    }
}

// Horizontal grid lines, tick marks and labels of the y axis.
void draw_y_axis(Canvas& canvas, const Rect& plot, const AxisScale& y, const std::vector<double>& ticks,
                 const std::vector<std::string>& labels) {
    for (std::size_t i = 0; i < ticks.size(); ++i) {
        int py = static_cast<int>(std::lround(y.to_pixel(ticks[i])));
        canvas.fill_rect(plot.x, py, plot.w, 1, kGridColor);
        canvas.fill_rect(plot.x - 5, py, 5, 1, kAxisColor);
        int w = Canvas::text_width(labels[i], kLabelScale);
        canvas.text(plot.x - 9 - w, py - Canvas::cap_height(kLabelScale) / 2, labels[i], kTextColor, kLabelScale);
    }
}

// The box around the plot area, drawn last so that the data never covers it.
void draw_plot_box(Canvas& canvas, const Rect& plot) {
    canvas.rect_outline(plot.x, plot.y, plot.w + 1, plot.h + 1, kAxisColor);
}

void draw_no_data(Canvas& canvas, const Rect& plot) {
    const std::string message = "(no data)";
    canvas.text(plot.x + (plot.w - Canvas::text_width(message, kLabelScale)) / 2,
                plot.y + (plot.h - Canvas::cap_height(kLabelScale)) / 2, message, kAxisColor, kLabelScale);
}

// ---- Legend ----

enum class Swatch { Line, Box, DashedLine };

struct LegendEntry {
    std::string label;
    Color color;
    Swatch swatch;
};

constexpr int kSwatchWidth = 28;  // the sample of the line or bar colour, left of each label
constexpr int kLegendPadding = 8;
constexpr int kLegendRowGap = 6;

int legend_entry_width(const LegendEntry& entry) {
    return kSwatchWidth + 8 + Canvas::text_width(entry.label, kLabelScale);
}

// Positions of the entries inside a legend box whose top left corner is (0, 0). `max_width`
// <= 0 stacks them in one column; otherwise they flow in rows of at most max_width pixels.
struct LegendLayout {
    std::vector<std::pair<int, int>> positions;
    int w = 0, h = 0;
};

LegendLayout layout_legend(const std::vector<LegendEntry>& entries, int max_width) {
    LegendLayout layout;
    const int row_height = Canvas::text_height(kLabelScale) + kLegendRowGap;
    int x = kLegendPadding, y = kLegendPadding;
    for (const LegendEntry& entry : entries) {
        int w = legend_entry_width(entry);
        if (max_width > 0 && x > kLegendPadding && x + w + kLegendPadding > max_width) {
            x = kLegendPadding;
            y += row_height;
        }
        layout.positions.push_back({x, y});
        layout.w = std::max(layout.w, x + w + kLegendPadding);
        if (max_width > 0)
            x += w + 24;
        else
            y += row_height;
    }
    if (max_width > 0) y += row_height;
    layout.h = y - kLegendRowGap + kLegendPadding - 2;
    return layout;
}

void draw_legend(Canvas& canvas, int x, int y, const std::vector<LegendEntry>& entries, const LegendLayout& layout) {
    canvas.fill_rect(x, y, layout.w, layout.h, kWhite);
    canvas.rect_outline(x, y, layout.w, layout.h, kLegendBorder);
    for (std::size_t i = 0; i < entries.size(); ++i) {
        int ex = x + layout.positions[i].first, ey = y + layout.positions[i].second;
        int mid = ey + Canvas::cap_height(kLabelScale) / 2;
        const LegendEntry& entry = entries[i];
        if (entry.swatch == Swatch::Box)
            canvas.fill_rect(ex + 4, ey, kSwatchWidth - 8, Canvas::cap_height(kLabelScale), entry.color);
        else
            canvas.line(ex, mid, ex + kSwatchWidth - 1, mid, entry.color, 3,
                        entry.swatch == Swatch::DashedLine ? 5 : 0);
        canvas.text(ex + kSwatchWidth + 8, ey, entry.label, kTextColor, kLabelScale);
    }
}

// How much has been drawn inside a rectangle: the pixels that are neither background nor grid.
long ink_in(const Canvas& canvas, int x, int y, int w, int h) {
    long count = 0;
    for (int py = std::max(y, 0); py < std::min(y + h, canvas.height()); ++py)
        for (int px = std::max(x, 0); px < std::min(x + w, canvas.width()); ++px) {
            Color c = canvas.pixel(px, py);
            if (!(c == kWhite) && !(c == kGridColor)) ++count;
        }
    return count;
}

// Puts the legend in the corner of the plot area that covers no data (trying top right, top left,
// bottom right, bottom left). Returns false, drawing nothing, when every corner would cover some:
// the chart is then drawn again with the legend in a strip above the plot.
bool place_legend_inside(Canvas& canvas, const Rect& plot, const std::vector<LegendEntry>& entries) {
    LegendLayout layout = layout_legend(entries, 0);
    if (layout.w > plot.w - 16 || layout.h > plot.h - 16) return false;
    const int margin = 8;
    const std::pair<int, int> corners[] = {
        {plot.right() - margin - layout.w, plot.y + margin},
        {plot.x + margin, plot.y + margin},
        {plot.right() - margin - layout.w, plot.bottom() - margin - layout.h},
        {plot.x + margin, plot.bottom() - margin - layout.h},
    };
    for (auto [x, y] : corners)
        if (ink_in(canvas, x - 4, y - 4, layout.w + 8, layout.h + 8) == 0) {
            draw_legend(canvas, x, y, entries, layout);
            return true;
        }
    return false;
}

int legend_strip_height(const std::vector<LegendEntry>& entries, const Axes& axes) {
    return layout_legend(entries, axes.width - 2 * kPad).h;
}

void draw_legend_strip(Canvas& canvas, const Frame& frame, const Axes& axes, const std::vector<LegendEntry>& entries) {
    LegendLayout layout = layout_legend(entries, axes.width - 2 * kPad);
    int x =
        std::clamp(frame.plot.x + (frame.plot.w - layout.w) / 2, kPad, std::max(kPad, axes.width - kPad - layout.w));
    draw_legend(canvas, x, frame.legend_strip_y, entries, layout);
}

void check_size(const std::string& function, const std::string& path, const Axes& axes) {
    if (axes.width < 200 || axes.height < 150 || axes.width > 16384 || axes.height > 16384)
        fail(function, path,
             "image size " + std::to_string(axes.width) + " x " + std::to_string(axes.height) +
                 " is outside 200 x 150 .. 16384 x 16384");
}

std::vector<std::string> tick_labels(const std::vector<double>& ticks, bool log) {
    std::vector<std::string> labels;
    double step = ticks.size() > 1 ? ticks[1] - ticks[0] : 1.0;
    for (double t : ticks) labels.push_back(format_tick(t, log ? t : step));
    return labels;
}

int widest(const std::vector<std::string>& labels, int scale) {
    int w = 0;
    for (const std::string& s : labels) w = std::max(w, Canvas::text_width(s, scale));
    return w;
}

// About one y tick per 55 pixels of plot height.
int y_tick_budget(const Axes& axes) {
    return std::clamp((axes.height - 160) / 55, 3, 10);
}

// ================================================================================================
// Line chart

enum class LegendPlace { Inside, Above };

std::optional<Canvas> draw_line_chart(const Axes& axes, const std::vector<Series>& series, LegendPlace legend_place) {
    // Data ranges over the points that can be drawn.
    auto usable = [&](double x, double y) { return std::isfinite(x) && std::isfinite(y) && (!axes.log_y || y > 0); };
    double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
    for (const Series& s : series)
        for (std::size_t i = 0; i < s.x.size(); ++i)
            if (usable(s.x[i], s.y[i])) {
                x_lo = std::min(x_lo, s.x[i]);
                x_hi = std::max(x_hi, s.x[i]);
                y_lo = std::min(y_lo, s.y[i]);
                y_hi = std::max(y_hi, s.y[i]);
            }
    bool has_data = x_lo <= x_hi;
    if (!has_data) {
        x_lo = 0, x_hi = 1;
        y_lo = axes.log_y ? 1 : 0, y_hi = axes.log_y ? 10 : 1;
    }

    std::vector<LegendEntry> entries;
    for (std::size_t i = 0; i < series.size(); ++i)
        if (!series[i].name.empty()) entries.push_back({series[i].name, palette(static_cast<int>(i)), Swatch::Line});

    std::vector<double> y_ticks =
        axes.log_y ? log_ticks(y_lo, y_hi, y_tick_budget(axes) + 2) : nice_ticks(y_lo, y_hi, y_tick_budget(axes));
    std::vector<std::string> y_labels = tick_labels(y_ticks, axes.log_y);
    int strip = legend_place == LegendPlace::Above && !entries.empty() ? legend_strip_height(entries, axes) : 0;
    Frame frame = layout_frame(axes, widest(y_labels, kLabelScale), Canvas::text_height(kLabelScale), strip, 24);
    const Rect& plot = frame.plot;

    // x ticks: as many as fit with a gap of at least 3 characters between labels.
    std::vector<double> x_ticks;
    std::vector<std::string> x_labels;
    for (int budget = 11; budget >= 2; --budget) {
        x_ticks = nice_ticks(x_lo, x_hi, budget);
        x_labels = tick_labels(x_ticks, false);
        int needed =
            (widest(x_labels, kLabelScale) + Canvas::text_width("000", kLabelScale)) * static_cast<int>(x_ticks.size());
        if (needed <= plot.w) break;
    }

    AxisScale xs{x_ticks.front(), x_ticks.back(), false, double(plot.x), double(plot.right())};
    AxisScale ys{y_ticks.front(), y_ticks.back(), axes.log_y, double(plot.bottom()), double(plot.y)};

    Canvas canvas(axes.width, axes.height);
    draw_titles(canvas, axes, frame);
    draw_y_axis(canvas, plot, ys, y_ticks, y_labels);
    for (std::size_t i = 0; i < x_ticks.size(); ++i) {
        int px = static_cast<int>(std::lround(xs.to_pixel(x_ticks[i])));
        canvas.fill_rect(px, plot.y, 1, plot.h, kGridColor);
        canvas.fill_rect(px, plot.bottom() + 1, 1, 5, kAxisColor);
        int w = Canvas::text_width(x_labels[i], kLabelScale);
        canvas.text(px - w / 2, plot.bottom() + 10, x_labels[i], kTextColor, kLabelScale);
    }
    if (!has_data) draw_no_data(canvas, plot);

    // The lines: a segment joins two neighbouring usable points; a usable point with no usable
    // neighbour gets a dot, so single points stay visible. Short series get a dot on every point.
    for (std::size_t k = 0; k < series.size(); ++k) {
        const Series& s = series[k];
        Color color = palette(static_cast<int>(k));
        bool dots = s.x.size() <= 25;
        for (std::size_t i = 0; i < s.x.size(); ++i) {
            if (!usable(s.x[i], s.y[i])) continue;
            double px = xs.to_pixel(s.x[i]), py = ys.to_pixel(s.y[i]);
            bool next = i + 1 < s.x.size() && usable(s.x[i + 1], s.y[i + 1]);
            bool previous = i > 0 && usable(s.x[i - 1], s.y[i - 1]);
            if (next) canvas.line(px, py, xs.to_pixel(s.x[i + 1]), ys.to_pixel(s.y[i + 1]), color, 2);
            if (dots || (!next && !previous)) {
                int cx = static_cast<int>(std::lround(px)), cy = static_cast<int>(std::lround(py));
                canvas.line(cx, cy, cx, cy, color, 7);
            }
        }
    }
    draw_plot_box(canvas, plot);

    if (!entries.empty()) {
        if (legend_place == LegendPlace::Above)
            draw_legend_strip(canvas, frame, axes, entries);
        else if (!place_legend_inside(canvas, plot, entries))
            return std::nullopt;
    }
    return canvas;
}

}  // namespace

void line_chart(const std::string& png_path, const Axes& axes, const std::vector<Series>& series) {
    check_size("line_chart", png_path, axes);
    for (const Series& s : series)
        if (s.x.size() != s.y.size())
            fail("line_chart", png_path,
                 "series '" + s.name + "' has " + std::to_string(s.x.size()) + " x values but " +
                     std::to_string(s.y.size()) + " y values");
    std::optional<Canvas> canvas = draw_line_chart(axes, series, LegendPlace::Inside);
    if (!canvas) canvas = draw_line_chart(axes, series, LegendPlace::Above);
    canvas->save_png(png_path, "mg::plot::line_chart");
}

// ================================================================================================
// Bar chart

namespace {

std::optional<Canvas> draw_bar_chart(const Axes& axes, const std::vector<std::string>& labels,
                                     const std::vector<BarSeries>& series, std::optional<double> reference,
                                     const std::string& reference_label, LegendPlace legend_place) {
    // The y range always holds 0 (bars grow from it) and the reference line.
    double lo = 0, hi = 0, largest_magnitude = 0;
    bool has_data = false;
    for (const BarSeries& s : series)
        for (double v : s.values)
            if (std::isfinite(v)) {
                lo = std::min(lo, v);
                hi = std::max(hi, v);
                largest_magnitude = std::max(largest_magnitude, std::abs(v));
                has_data = true;
            }
    if (reference && std::isfinite(*reference)) {
        lo = std::min(lo, *reference);
        hi = std::max(hi, *reference);
    }
    if (hi == lo) hi = 1;
    // 8% headroom above the tallest bar for its value label.
    std::vector<double> y_ticks = nice_ticks(lo, hi + (hi > 0 ? 0.08 * (hi - lo) : 0), y_tick_budget(axes));
    std::vector<std::string> y_labels = tick_labels(y_ticks, false);

    std::vector<LegendEntry> entries;
    for (std::size_t i = 0; i < series.size(); ++i)
        if (!series[i].name.empty()) entries.push_back({series[i].name, palette(static_cast<int>(i)), Swatch::Box});
    if (reference && std::isfinite(*reference))
        entries.push_back(
            {reference_label.empty() ? "reference " + format_value(*reference, std::abs(*reference)) : reference_label,
             kReferenceColor, Swatch::DashedLine});

    int strip = legend_place == LegendPlace::Above && !entries.empty() ? legend_strip_height(entries, axes) : 0;
    Frame frame = layout_frame(axes, widest(y_labels, kLabelScale), Canvas::text_height(kLabelScale), strip, 8);
    const Rect& plot = frame.plot;
    AxisScale ys{y_ticks.front(), y_ticks.back(), false, double(plot.bottom()), double(plot.y)};

    Canvas canvas(axes.width, axes.height);
    draw_titles(canvas, axes, frame);
    draw_y_axis(canvas, plot, ys, y_ticks, y_labels);
    if (labels.empty() || !has_data) draw_no_data(canvas, plot);

    // One slot per label; the bars of a group fill the middle 80% of the slot.
    const int groups = static_cast<int>(labels.size());
    const int bars_per_group = std::max(1, static_cast<int>(series.size()));
    const double slot = groups > 0 ? double(plot.w) / groups : plot.w;
    const double bar_width = slot * 0.8 / bars_per_group;
    // Group labels: scale 2 when they all fit their slot, else scale 1, and when even that is too
    // wide, only every label_every-th one.
    int label_scale = widest(labels, kLabelScale) <= slot - 6 ? kLabelScale : 1;
    int label_every = std::max(1, static_cast<int>(std::ceil((widest(labels, label_scale) + 6) / std::max(slot, 1.0))));
    const double zero = ys.to_pixel(0.0);
    struct ValueLabel {
        int x, y;
        std::string text;
    };
    std::vector<ValueLabel> value_labels;
    for (int g = 0; g < groups; ++g) {
        double group_left = plot.x + slot * g + slot * 0.1;
        if (g % label_every == 0) {
            int label_w = Canvas::text_width(labels[g], label_scale);
            canvas.text(static_cast<int>(plot.x + slot * (g + 0.5)) - label_w / 2, plot.bottom() + 10, labels[g],
                        kTextColor, label_scale);
        }
        for (std::size_t k = 0; k < series.size(); ++k) {
            double v = series[k].values[g];
            if (!std::isfinite(v)) continue;
            int x0 = static_cast<int>(std::lround(group_left + bar_width * k));
            int x1 = static_cast<int>(std::lround(group_left + bar_width * (k + 1))) - (bar_width >= 6 ? 2 : 0);
            int top = static_cast<int>(std::lround(std::min(zero, ys.to_pixel(v))));
            int bottom = static_cast<int>(std::lround(std::max(zero, ys.to_pixel(v))));
            canvas.fill_rect(x0, top, std::max(1, x1 - x0), std::max(1, bottom - top), palette(static_cast<int>(k)));
            // The value above a positive bar (below a negative one), when it fits the bar's width.
            std::string text = format_value(v, largest_magnitude);
            int text_w = Canvas::text_width(text, kLabelScale);
            if (text_w <= x1 - x0 + 4) {
                int ty = v >= 0 ? top - 4 - Canvas::cap_height(kLabelScale) : bottom + 4;
                value_labels.push_back({(x0 + x1) / 2 - text_w / 2, ty, text});
            }
        }
    }
    if (lo < 0) canvas.fill_rect(plot.x, static_cast<int>(std::lround(zero)), plot.w, 1, kAxisColor);
    if (reference && std::isfinite(*reference)) {
        double py = ys.to_pixel(*reference);
        canvas.line(plot.x, py, plot.right(), py, kReferenceColor, 2, 8);
    }
    // Value labels last, on a white patch, so that the reference line never strikes them through.
    for (const ValueLabel& label : value_labels) {
        int w = Canvas::text_width(label.text, kLabelScale);
        canvas.fill_rect(label.x - 2, label.y - 2, w + 4, Canvas::cap_height(kLabelScale) + 4, kWhite);
        canvas.text(label.x, label.y, label.text, kTextColor, kLabelScale);
    }
    draw_plot_box(canvas, plot);

    if (!entries.empty()) {
        if (legend_place == LegendPlace::Above)
            draw_legend_strip(canvas, frame, axes, entries);
        else if (!place_legend_inside(canvas, plot, entries))
            return std::nullopt;
    }
    return canvas;
}

}  // namespace

void bar_chart(const std::string& png_path, const Axes& axes, const std::vector<std::string>& labels,
               const std::vector<BarSeries>& series, std::optional<double> reference,
               const std::string& reference_label) {
    check_size("bar_chart", png_path, axes);
    for (const BarSeries& s : series)
        if (s.values.size() != labels.size())
            fail("bar_chart", png_path,
                 "series '" + s.name + "' has " + std::to_string(s.values.size()) + " values but there are " +
                     std::to_string(labels.size()) + " labels");
    std::optional<Canvas> canvas =
        draw_bar_chart(axes, labels, series, reference, reference_label, LegendPlace::Inside);
    if (!canvas) canvas = draw_bar_chart(axes, labels, series, reference, reference_label, LegendPlace::Above);
    canvas->save_png(png_path, "mg::plot::bar_chart");
}

// ================================================================================================
// Heatmap

void heatmap(const std::string& png_path, const Axes& axes, const std::vector<std::string>& row_labels,
             const std::vector<std::string>& col_labels, const std::vector<std::vector<double>>& values,
             bool annotate) {
    check_size("heatmap", png_path, axes);
    if (values.size() != row_labels.size())
        fail(
            "heatmap", png_path,
            std::to_string(values.size()) + " rows of values but " + std::to_string(row_labels.size()) + " row labels");
    for (std::size_t r = 0; r < values.size(); ++r)
        if (values[r].size() != col_labels.size())
            fail("heatmap", png_path,
                 "row " + std::to_string(r) + " ('" + row_labels[r] + "') has " + std::to_string(values[r].size()) +
                     " values but there are " + std::to_string(col_labels.size()) + " column labels");
    const int rows = static_cast<int>(row_labels.size()), cols = static_cast<int>(col_labels.size());

    // Colour scale: from min(0, smallest) to the largest finite value.
    double lo = 0, hi = -std::numeric_limits<double>::infinity(), largest_magnitude = 0;
    for (const auto& row : values)
        for (double v : row)
            if (std::isfinite(v)) {
                lo = std::min(lo, v);
                hi = std::max(hi, v);
                largest_magnitude = std::max(largest_magnitude, std::abs(v));
            }
    bool has_data = std::isfinite(hi);
    if (!has_data || hi <= lo) hi = lo + 1;
    std::vector<double> bar_ticks;
    for (double t : nice_ticks(lo, hi, y_tick_budget(axes)))
        if (t >= lo - 1e-9 * (hi - lo) && t <= hi + 1e-9 * (hi - lo)) bar_ticks.push_back(t);
    std::vector<std::string> bar_labels = tick_labels(bar_ticks, false);
    if (bar_ticks.size() >= 2) {  // the step of the full tick list, for the decimals
        double step = bar_ticks[1] - bar_ticks[0];
        for (std::size_t i = 0; i < bar_ticks.size(); ++i) bar_labels[i] = format_tick(bar_ticks[i], step);
    }

    // Layout, left to right: ylabel | row labels | cells | colour bar | its tick labels.
    const int colorbar_width = 18;
    int title_scale = fitting_scale(axes.title, axes.width - 2 * kPad, kTitleScale);
    int top =
        kPad + (axes.title.empty() ? 0 : Canvas::text_height(title_scale) + 12) + Canvas::cap_height(kLabelScale) / 2;
    int left = kPad + widest(row_labels, kLabelScale) + 10;
    if (!axes.ylabel.empty()) left += Canvas::text_height(kLabelScale) + 12;
    int right = axes.width - kPad - widest(bar_labels, kLabelScale) - 10 - colorbar_width - 24;
    int cells_w = std::max(right - left, 10);
    double cell_w = cols > 0 ? double(cells_w) / cols : cells_w;
    // Column labels: flat at scale 2 when they fit the cell width; else turned at scale 2 when that
    // takes at most a quarter of the height; else flat at scale 1; else turned at scale 1.
    auto all_fit = [&](int scale) { return widest(col_labels, scale) <= cell_w - 4; };
    bool turned = false;
    int col_scale = kLabelScale;
    if (!all_fit(kLabelScale)) {
        bool room_to_turn = cell_w >= Canvas::text_height(kLabelScale) + 2;
        if (room_to_turn && widest(col_labels, kLabelScale) <= axes.height / 4)
            turned = true;
        else if (all_fit(1))
            col_scale = 1;
        else
            turned = true, col_scale = room_to_turn ? kLabelScale : 1;
    }
    int col_labels_h = turned ? widest(col_labels, col_scale) : Canvas::text_height(col_scale);
    int bottom = axes.height - kPad - col_labels_h - 10;
    if (!axes.xlabel.empty()) bottom -= Canvas::text_height(kLabelScale) + 10;
    Frame frame;
    frame.title_scale = title_scale;
    frame.plot = {left, top, cells_w, std::max(bottom - top, 10)};
    const Rect& cells = frame.plot;
    double cell_h = rows > 0 ? double(cells.h) / rows : cells.h;

    Canvas canvas(axes.width, axes.height);
    draw_titles(canvas, axes, frame);
    if (rows == 0 || cols == 0) draw_no_data(canvas, cells);

    auto color_of = [&](double v) { return colormap((v - lo) / (hi - lo)); };
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
            int x0 = cells.x + static_cast<int>(std::lround(c * cell_w)),
                x1 = cells.x + static_cast<int>(std::lround((c + 1) * cell_w));
            int y0 = cells.y + static_cast<int>(std::lround(r * cell_h)),
                y1 = cells.y + static_cast<int>(std::lround((r + 1) * cell_h));
            double v = values[r][c];
            Color fill = std::isfinite(v) ? color_of(v) : kMissingColor;
            int gap = (x1 - x0 > 6 && y1 - y0 > 6) ? 1 : 0;  // thin white lines between cells
            canvas.fill_rect(x0, y0, x1 - x0 - gap, y1 - y0 - gap, fill);
            if (!annotate || !std::isfinite(v)) continue;
            std::string text = format_value(v, largest_magnitude);
            for (int scale = kLabelScale; scale >= 1; --scale) {
                int w = Canvas::text_width(text, scale), h = Canvas::cap_height(scale);
                if (w > x1 - x0 - 6 || h > y1 - y0 - 4) continue;
                Color ink = luminance(fill) < 140 ? kWhite : kBlack;
                canvas.text((x0 + x1 - gap) / 2 - w / 2, (y0 + y1 - gap) / 2 - h / 2, text, ink, scale);
                break;
            }
        }

    // Row labels, right-aligned left of the cells; every n-th one when the rows are too thin.
    int row_scale = cell_h >= Canvas::text_height(kLabelScale) ? kLabelScale : 1;
    int row_every = std::max(1, static_cast<int>(std::ceil(Canvas::text_height(row_scale) / std::max(cell_h, 1.0))));
    for (int r = 0; r < rows; r += row_every) {
        int w = Canvas::text_width(row_labels[r], row_scale);
        int cy = cells.y + static_cast<int>(std::lround((r + 0.5) * cell_h));
        canvas.text(cells.x - 8 - w, cy - Canvas::cap_height(row_scale) / 2, row_labels[r], kTextColor, row_scale);
    }
    // Column labels under the cells.
    int col_every =
        turned ? std::max(1, static_cast<int>(std::ceil(Canvas::text_height(col_scale) / std::max(cell_w, 1.0)))) : 1;
    for (int c = 0; c < cols; c += col_every) {
        int cx = cells.x + static_cast<int>(std::lround((c + 0.5) * cell_w));
        int w = Canvas::text_width(col_labels[c], col_scale);
        if (turned)
            canvas.text_vertical(cx - Canvas::cap_height(col_scale) / 2, cells.bottom() + 8, col_labels[c], kTextColor,
                                 col_scale);
        else
            canvas.text(cx - w / 2, cells.bottom() + 8, col_labels[c], kTextColor, col_scale);
    }

    // The colour bar: lo at the bottom, hi at the top, with its ticks on the right.
    int bar_x = cells.right() + 24;
    AxisScale bar_scale{lo, hi, false, double(cells.bottom() - 1), double(cells.y)};
    for (int py = cells.y; py < cells.bottom(); ++py) {
        double t = 1.0 - double(py - cells.y) / std::max(1, cells.h - 1);
        canvas.fill_rect(bar_x, py, colorbar_width, 1, colormap(t));
    }
    canvas.rect_outline(bar_x - 1, cells.y - 1, colorbar_width + 2, cells.h + 2, kAxisColor);
    for (std::size_t i = 0; i < bar_ticks.size(); ++i) {
        int py = static_cast<int>(std::lround(bar_scale.to_pixel(bar_ticks[i])));
        canvas.fill_rect(bar_x + colorbar_width, py, 5, 1, kAxisColor);
        canvas.text(bar_x + colorbar_width + 9, py - Canvas::cap_height(kLabelScale) / 2, bar_labels[i], kTextColor,
                    kLabelScale);
    }
    canvas.save_png(png_path, "mg::plot::heatmap");
}

// ================================================================================================
// Graph: boxes in layers, arrows between them

void graph(const std::string& png_path, const Axes& axes, const std::vector<std::vector<std::string>>& layers,
           const std::vector<std::pair<std::string, std::string>>& edges) {
    check_size("graph", png_path, axes);
    struct Box {
        int layer = 0, x = 0, y = 0, w = 0, h = 0;
        double cx() const { return x + w / 2.0; }
        double cy() const { return y + h / 2.0; }
    };
    std::map<std::string, Box> boxes;
    for (const auto& layer : layers)
        for (const std::string& name : layer)
            if (!boxes.emplace(name, Box{}).second) fail("graph", png_path, "node '" + name + "' appears twice");
    for (const auto& [from, to] : edges)
        for (const std::string& name : {from, to})
            if (!boxes.count(name))
                fail("graph", png_path, "edge " + from + " -> " + to + " names an unknown node '" + name + "'");

    int title_scale = fitting_scale(axes.title, axes.width - 2 * kPad, kTitleScale);
    int top = kPad + (axes.title.empty() ? 0 : Canvas::text_height(title_scale) + 12);
    int avail_w = axes.width - 2 * kPad, avail_h = axes.height - kPad - top;
    // One font scale for every box: 2 unless some layer's names do not fit side by side.
    int scale = kLabelScale;
    for (const auto& layer : layers) {
        int total = 0;
        for (const std::string& name : layer) total += Canvas::text_width(name, kLabelScale) + 20 + 16;
        if (total > avail_w) scale = 1;
    }
    const int box_h = Canvas::text_height(scale) + 14;
    const int n_layers = static_cast<int>(layers.size());
    for (int i = 0; i < n_layers; ++i) {
        const int n = static_cast<int>(layers[i].size());
        double slot = double(avail_w) / std::max(n, 1);
        int cy = top + static_cast<int>(std::lround((i + 0.5) * avail_h / std::max(n_layers, 1)));
        for (int j = 0; j < n; ++j) {
            Box& box = boxes[layers[i][j]];
            box.layer = i;
            box.w = std::min(Canvas::text_width(layers[i][j], scale) + 20, static_cast<int>(slot) - 8);
            box.h = box_h;
            box.x = kPad + static_cast<int>(std::lround((j + 0.5) * slot)) - box.w / 2;
            box.y = cy - box_h / 2;
        }
    }

    Canvas canvas(axes.width, axes.height);
    if (!axes.title.empty()) {
        int w = Canvas::text_width(axes.title, title_scale);
        canvas.text(std::max(kPad, (axes.width - w) / 2), kPad, axes.title, kTextColor, title_scale);
    }
    if (boxes.empty()) draw_no_data(canvas, {kPad, top, avail_w, avail_h});

    // Arrows first, so that the boxes cover their ends: downwards from the bottom of one box to the
    // top of the next, upwards the other way round, sideways within a layer.
    const Color edge_color{90, 90, 90};
    for (const auto& [from, to] : edges) {
        const Box& a = boxes[from];
        const Box& b = boxes[to];
        double x0 = a.cx(), y0 = a.cy(), x1 = b.cx(), y1 = b.cy();
        if (b.layer > a.layer)
            y0 = a.y + a.h, y1 = b.y - 1;
        else if (b.layer < a.layer)
            y0 = a.y, y1 = b.y + b.h;
        else if (b.x > a.x)
            x0 = a.x + a.w, x1 = b.x - 1;
        else
            x0 = a.x, x1 = b.x + b.w;
        double length = std::hypot(x1 - x0, y1 - y0);
        if (length < 1) continue;
        double ux = (x1 - x0) / length, uy = (y1 - y0) / length;  // unit vector along the arrow
        const double head = 12, half = 6;
        canvas.line(x0, y0, x1 - ux * head, y1 - uy * head, edge_color, 2);
        canvas.fill_triangle(x1, y1, x1 - ux * head - uy * half, y1 - uy * head + ux * half, x1 - ux * head + uy * half,
                             y1 - uy * head - ux * half, edge_color);
    }
    for (int i = 0; i < n_layers; ++i)
        for (const std::string& name : layers[i]) {
            const Box& box = boxes[name];
            canvas.fill_rect(box.x, box.y, box.w, box.h, lighten(palette(i), 0.75));
            canvas.rect_outline(box.x, box.y, box.w, box.h, kAxisColor, 2);
            int w = Canvas::text_width(name, scale);
            canvas.text(box.x + (box.w - w) / 2, box.y + (box.h - Canvas::cap_height(scale)) / 2, name, kTextColor,
                        scale);
        }
    canvas.save_png(png_path, "mg::plot::graph");
}

}  // namespace mg::plot
