// demos/common/font.cpp: drawing text with the built-in font of font.h. These are the text
// methods of mg::plot::Canvas (plot.h); the rest of the canvas lives in plot.cpp.
//
// A glyph's ink pixels become scale x scale squares. Glyphs are spaced proportionally: each one
// takes the width of its ink plus one blank column, so "1.5" is narrower than "888".
#include "demos/common/font.h"
#include "demos/common/plot.h"

namespace mg::plot {

int Canvas::text_width(std::string_view s, int scale) {
    // Proportional spacing: each glyph is as wide as its ink, plus one blank column between glyphs.
    int columns = 0;
    for (char c : s) columns += font::glyph(c).width + 1;
    return s.empty() ? 0 : (columns - 1) * scale;
}

int Canvas::text_height(int scale) {
    return font::kGlyphHeight * scale;
}
int Canvas::cap_height(int scale) {
    return font::kCapHeight * scale;
}

void Canvas::text(int x, int y, std::string_view s, Color color, int scale) {
    int pen = x;
    for (char c : s) {
        const font::Glyph& g = font::glyph(c);
        for (int row = 0; row < font::kGlyphHeight; ++row)
            for (int col = g.left; col < g.left + g.width; ++col)
                if (g.ink(col, row)) fill_rect(pen + (col - g.left) * scale, y + row * scale, scale, scale, color);
        pen += (g.width + 1) * scale;
    }
}

void Canvas::text_vertical(int x, int y, std::string_view s, Color color, int scale) {
    // Turning anticlockwise maps the point (u, v) of the flat text box (u along the text, v down)
    // to (x + v, y + width - u): the first letter ends up at the bottom, the tops of the letters
    // face left.
    int total = text_width(s, scale);
    int pen = 0;
    for (char c : s) {
        const font::Glyph& g = font::glyph(c);
        for (int row = 0; row < font::kGlyphHeight; ++row)
            for (int col = g.left; col < g.left + g.width; ++col)
                if (g.ink(col, row)) {
                    int u = pen + (col - g.left) * scale, v = row * scale;
                    fill_rect(x + v, y + total - u - scale, scale, scale, color);
                }
        pen += (g.width + 1) * scale;
    }
}

}  // namespace mg::plot
