// demos/common/plot.h: a small plotting module that writes PNG charts for the demo reports.
//
// Four kinds of picture, each one call that writes one PNG file:
//   line_chart  loss / accuracy curves: several named series of (x, y) points, optional log y axis
//   bar_chart   utilization per expert: groups of bars, one group per label, one bar per series,
//               and an optional dashed reference line (the uniform 1/E share) in the legend
//   heatmap     expert x class routing: a rows x cols matrix of coloured cells, numbers in the
//               cells and a colour bar that gives the scale
//   graph       boxes and arrows: named nodes in layers (top to bottom) and edges between them
//
// Everything is drawn by hand on an RGB `Canvas` (pixels, thick lines, rectangles, text in the
// built-in bitmap font of font.h) and written with stb_image_write. The canvas and the charts are
// in plot.cpp, the text methods of the canvas in font.cpp. Nothing here knows the engine:
// inputs are plain std::vector<double> and std::string, so any program can use it.
// Errors (a file that cannot be written, inputs of inconsistent sizes) throw std::runtime_error
// with a message that names the function and the file, e.g.
//   "mg::plot::line_chart(runs/x/loss.png): series 'train' has 300 x values but 299 y values".
// docs/demos/plotting.md walks through the code; tests/test_plot.cpp reads the PNGs back.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mg::plot {

// ------------------------------------------------------------------------------------------------
// Colours

struct Color {
    std::uint8_t r = 0, g = 0, b = 0;
    bool operator==(const Color&) const = default;
};

inline constexpr Color kWhite{255, 255, 255};
inline constexpr Color kBlack{0, 0, 0};

// The Okabe-Ito palette, a set of colours that people with the common forms of colour blindness
// can still tell apart. palette(i) cycles through its 7 colours (yellow is left out: too faint
// on white).
Color palette(int index);

// A sequential colour map for heatmaps (close to matplotlib's viridis: dark purple at 0, yellow
// at 1, brightness rising steadily, so it also reads in grey scale). t is clamped to [0, 1].
Color colormap(double t);

// ------------------------------------------------------------------------------------------------
// The canvas: an RGB image in memory with drawing primitives. Coordinates are pixels, (0, 0) is
// the top left corner, y grows downwards. Drawing outside the image is silently clipped.

class Canvas {
public:
    Canvas(int width, int height, Color background = kWhite);

    int width() const { return width_; }
    int height() const { return height_; }
    Color pixel(int x, int y) const;                               // the colour at (x, y); (x, y) must be inside
    const std::vector<std::uint8_t>& rgb() const { return rgb_; }  // (height, width, 3), row-major

    void set_pixel(int x, int y, Color color);
    void fill_rect(int x, int y, int w, int h, Color color);
    void rect_outline(int x, int y, int w, int h, Color color, int thickness = 1);
    // A straight line from (x0, y0) to (x1, y1), `thickness` pixels wide. dash > 0 draws dashes
    // of `dash` pixels separated by gaps of the same length.
    void line(double x0, double y0, double x1, double y1, Color color, int thickness = 1, int dash = 0);
    void fill_triangle(double x0, double y0, double x1, double y1, double x2, double y2, Color color);

    // Text in the built-in font, every font pixel drawn as a scale x scale square. (x, y) is the
    // top left corner of the text box, which is text_width() wide and text_height() tall.
    void text(int x, int y, std::string_view s, Color color, int scale = 2);
    // The same text turned 90 degrees anticlockwise (it reads from bottom to top), for the label
    // of a y axis. (x, y) is the top left corner of the turned box: text_height() wide and
    // text_width() tall.
    void text_vertical(int x, int y, std::string_view s, Color color, int scale = 2);
    static int text_width(std::string_view s, int scale = 2);
    static int text_height(int scale = 2);  // includes the descender rows
    static int cap_height(int scale = 2);   // height of capitals and digits

    // Writes the image as a PNG, creating the parent directories. `function` names the caller
    // in the error message.
    void save_png(const std::string& path, const std::string& function = "mg::plot::Canvas::save_png") const;

private:
    int width_, height_;
    std::vector<std::uint8_t> rgb_;
};

// ------------------------------------------------------------------------------------------------
// Axis ticks

// "Nice" tick values covering [lo, hi]: evenly spaced by 1, 2 or 5 times a power of ten, at most
// max_ticks of them; the first tick is <= lo and the last >= hi (they become the axis limits).
// nice_ticks(0.3, 2.3, 6) = {0, 0.5, 1, 1.5, 2, 2.5}.
std::vector<double> nice_ticks(double lo, double hi, int max_ticks = 6);
// Ticks for a logarithmic axis over [lo, hi] (both > 0): 1, 2, 5 times powers of ten, or only
// powers of ten when that gives too many. log_ticks(0.3, 2.3, 8) = {0.2, 0.5, 1, 2, 5}.
std::vector<double> log_ticks(double lo, double hi, int max_ticks = 8);
// The label of a tick: as many decimals as the tick step needs (0.05 -> "0.05", 50 -> "50"),
// never "-0"; very large or very small values in exponent form ("1e+06").
std::string format_tick(double value, double step);

// ------------------------------------------------------------------------------------------------
// Charts

// What every chart shares: the title above it, the axis labels, the image size in pixels.
// Every field has a default (so `{.title = "loss"}` leaves the rest as below, warning-free).
struct Axes {
    std::string title{};
    std::string xlabel{};
    std::string ylabel{};
    bool log_y = false;  // line_chart only: logarithmic y axis (values <= 0 are skipped)
    int width = 800;
    int height = 500;
};

// One line of a line chart. x and y must have the same length; NaN and infinite points are left
// out (the line breaks there); a point with no neighbour is drawn as a dot. A series with an empty
// name gets no legend entry.
struct Series {
    std::string name{};
    std::vector<double> x{}, y{};
};

void line_chart(const std::string& png_path, const Axes& axes, const std::vector<Series>& series);

// One colour of bars in a bar chart: values[i] is the bar in the group of labels[i].
struct BarSeries {
    std::string name{};
    std::vector<double> values{};
};

// One group of bars per label; with several series the bars of a group stand side by side. The
// y axis always includes 0. `reference` draws a dashed horizontal line (e.g. the uniform share
// 1/E of each expert), named in the legend by `reference_label`.
void bar_chart(const std::string& png_path, const Axes& axes, const std::vector<std::string>& labels,
               const std::vector<BarSeries>& series, std::optional<double> reference = {},
               const std::string& reference_label = "");

// A rows x cols matrix as coloured cells: values[r][c] is the cell of row_labels[r] and
// col_labels[c]. The colour scale runs from min(0, smallest value) to the largest value and is
// shown in a colour bar at the right. annotate writes each value in its cell when it fits.
// NaN cells are grey. xlabel names the columns, ylabel the rows.
void heatmap(const std::string& png_path, const Axes& axes, const std::vector<std::string>& row_labels,
             const std::vector<std::string>& col_labels, const std::vector<std::vector<double>>& values,
             bool annotate = true);

// Boxes and arrows: layers[i] are the node names of layer i, drawn as a row of boxes, layer 0 at
// the top. Each edge (from, to) is an arrow between two named nodes. Only title, width and height
// of `axes` are used.
void graph(const std::string& png_path, const Axes& axes, const std::vector<std::vector<std::string>>& layers,
           const std::vector<std::pair<std::string, std::string>>& edges);

}  // namespace mg::plot
