// demos/common/font.h: the built-in bitmap font of the plotting module (plot.h).
//
// Every printable ASCII character (32..126) is a 5 x 9 bitmap, drawn below as a "font sheet" so
// that you can read the glyphs in the source: '#' is ink, '.' is paper, one space between glyphs.
// Each block of 9 text lines is one row of the ASCII table (16 characters, 0x20 to 0x7E).
// Rows 0..6 hold capitals and digits (row 6 is the baseline); rows 7..8 hold the descenders of
// g, j, p, q, y and the comma. Lower case letters use rows 2..6 (the "x-height").
//
// The text renderer (Canvas::text in font.cpp) scales each glyph by an integer factor (every ink
// pixel becomes a scale x scale square) and spaces glyphs proportionally: a glyph is as wide as its
// ink, plus one blank column, so "1.5" is narrower than "888". To change a letter, edit its picture
// here; tests/test_plot.cpp checks that every printable glyph has ink.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace mg::plot::font {

constexpr int kGlyphWidth = 5;      // pixels per glyph row, before scaling
constexpr int kGlyphHeight = 9;     // rows per glyph: 7 above the baseline (incl.) + 2 descender rows
constexpr int kCapHeight = 7;       // rows 0..6: capitals and digits
constexpr int kFirstChar = 32;      // ' '
constexpr int kLastChar = 126;      // '~'
constexpr int kGlyphsPerBlock = 16; // glyphs per block of the sheet below

// The sheet: (95 glyphs / 16 per block, rounded up) = 6 blocks of kGlyphHeight lines.
inline constexpr const char* kSheet[] = {
    // 0x20:  !"#$%&'()*+,-./
    "..... ..#.. .#.#. .#.#. ..#.. ##... .##.. ..#.. ...#. .#... ..... ..... ..... ..... ..... ....#",
    "..... ..#.. .#.#. .#.#. .#### ##..# #..#. ..#.. ..#.. ..#.. ..#.. ..#.. ..... ..... ..... ....#",
    "..... ..#.. .#.#. ##### #.#.. ...#. #.#.. .#... .#... ...#. #.#.# ..#.. ..... ..... ..... ...#.",
    "..... ..#.. ..... .#.#. .###. ..#.. .#... ..... .#... ...#. .###. ##### ..... ##### ..... ..#..",
    "..... ..#.. ..... ##### ..#.# .#... #.#.# ..... .#... ...#. #.#.# ..#.. ..... ..... ..... .#...",
    "..... ..... ..... .#.#. ####. #..## #..#. ..... ..#.. ..#.. ..#.. ..#.. .##.. ..... .##.. #....",
    "..... ..#.. ..... .#.#. ..#.. ...## .##.# ..... ...#. .#... ..... ..... .##.. ..... .##.. #....",
    "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..#.. ..... ..... .....",
    "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .#... ..... ..... .....",
    // 0x30: 0123456789:;<=>?
    ".###. ..#.. .###. ##### ...#. ##### ..##. ##### .###. .###. ..... ..... ...#. ..... .#... .###.",
    "#...# .##.. #...# ...#. ..##. #.... .#... ....# #...# #...# .##.. .##.. ..#.. ..... ..#.. #...#",
    "#..## ..#.. ....# ..#.. .#.#. ####. #.... ...#. #...# #...# .##.. .##.. .#... ##### ...#. ....#",
    "#.#.# ..#.. ...#. ...#. #..#. ....# ####. ..#.. .###. .#### ..... ..... #.... ..... ....# ...#.",
    "##..# ..#.. ..#.. ....# ##### ....# #...# .#... #...# ....# .##.. .##.. .#... ##### ...#. ..#..",
    "#...# ..#.. .#... #...# ...#. #...# #...# .#... #...# ...#. .##.. .##.. ..#.. ..... ..#.. .....",
    ".###. .###. ##### .###. ...#. .###. .###. .#... .###. .##.. ..... ..#.. ...#. ..... .#... ..#..",
    "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .#... ..... ..... ..... .....",
    "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....",
    // 0x40: @ABCDEFGHIJKLMNO
    ".###. .###. ####. .###. ####. ##### ##### .###. #...# .###. ..### #...# #.... #...# #...# .###.",
    "#...# #...# #...# #...# #...# #.... #.... #...# #...# ..#.. ...#. #..#. #.... ##.## #...# #...#",
    "#.### #...# #...# #.... #...# #.... #.... #.... #...# ..#.. ...#. #.#.. #.... #.#.# ##..# #...#",
    "#.#.# ##### ####. #.... #...# ####. ####. #.### ##### ..#.. ...#. ##... #.... #.#.# #.#.# #...#",
    "#.### #...# #...# #.... #...# #.... #.... #...# #...# ..#.. ...#. #.#.. #.... #...# #..## #...#",
    "#.... #...# #...# #...# #...# #.... #.... #...# #...# ..#.. #..#. #..#. #.... #...# #...# #...#",
    ".#### #...# ####. .###. ####. ##### #.... .#### #...# .###. .##.. #...# ##### #...# #...# .###.",
    "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....",
    "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....",
    // 0x50: PQRSTUVWXYZ[\]^_
    "####. .###. ####. .#### ##### #...# #...# #...# #...# #...# ##### .###. #.... .###. ..#.. .....",
    "#...# #...# #...# #.... ..#.. #...# #...# #...# #...# #...# ....# .#... #.... ...#. .#.#. .....",
    "#...# #...# #...# #.... ..#.. #...# #...# #...# .#.#. .#.#. ...#. .#... .#... ...#. #...# .....",
    "####. #...# ####. .###. ..#.. #...# #...# #.#.# ..#.. ..#.. ..#.. .#... ..#.. ...#. ..... .....",
    "#.... #.#.# #.#.. ....# ..#.. #...# #...# #.#.# .#.#. ..#.. .#... .#... ...#. ...#. ..... .....",
    "#.... #..#. #..#. ....# ..#.. #...# .#.#. #.#.# #...# ..#.. #.... .#... ....# ...#. ..... .....",
    "#.... .##.# #...# ####. ..#.. .###. ..#.. .#.#. #...# ..#.. ##### .###. ....# .###. ..... .....",
    "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... #####",
    "..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... ..... .....",
    // 0x60: `abcdefghijklmno
    ".#... ..... #.... ..... ....# ..... ..##. ..... #.... ..#.. ...#. #.... .##.. ..... ..... .....",
    "..#.. ..... #.... ..... ....# ..... .#... ..... #.... ..... ..... #.... ..#.. ..... ..... .....",
    "..... .###. ####. .#### .#### .###. ###.. .#### #.##. .##.. ..##. #..#. ..#.. ##.#. #.##. .###.",
    "..... ....# #...# #.... #...# #...# .#... #...# ##..# ..#.. ...#. #.#.. ..#.. #.#.# ##..# #...#",
    "..... .#### #...# #.... #...# ##### .#... #...# #...# ..#.. ...#. ##... ..#.. #.#.# #...# #...#",
    "..... #...# #...# #.... #...# #.... .#... #...# #...# ..#.. ...#. #.#.. ..#.. #.#.# #...# #...#",
    "..... .#### ####. .#### .#### .###. .#... .#### #...# .###. ...#. #..#. .###. #.#.# #...# .###.",
    "..... ..... ..... ..... ..... ..... ..... ....# ..... ..... #..#. ..... ..... ..... ..... .....",
    "..... ..... ..... ..... ..... ..... ..... .###. ..... ..... .##.. ..... ..... ..... ..... .....",
    // 0x70: pqrstuvwxyz{|}~
    "..... ..... ..... ..... .#... ..... ..... ..... ..... ..... ..... ..##. ..#.. .##.. .....",
    "..... ..... ..... ..... .#... ..... ..... ..... ..... ..... ..... .#... ..#.. ...#. .....",
    "####. .#### #.##. .#### ####. #...# #...# #...# #...# #...# ##### .#... ..#.. ...#. .#...",
    "#...# #...# ##..# #.... .#... #...# #...# #...# .#.#. #...# ...#. #.... ..#.. ....# #.#.#",
    "#...# #...# #.... .###. .#... #...# #...# #.#.# ..#.. #...# ..#.. .#... ..#.. ...#. ...#.",
    "#...# #...# #.... ....# .#..# #..## .#.#. #.#.# .#.#. #...# .#... .#... ..#.. ...#. .....",
    "####. .#### #.... ####. ..##. .##.# ..#.. .#.#. #...# .#### ##### ..##. ..#.. .##.. .....",
    "#.... ....# ..... ..... ..... ..... ..... ..... ..... ....# ..... ..... ..#.. ..... .....",
    "#.... ....# ..... ..... ..... ..... ..... ..... ..... .###. ..... ..... ..... ..... .....",
};
static_assert(std::size(kSheet) == 6 * kGlyphHeight, "font sheet: 6 blocks of 9 lines");

// One glyph, decoded from the sheet: bit (kGlyphWidth-1-col) of rows[row] is the pixel (col, row),
// so the leftmost column is the highest bit. `left` and `width` are the ink extent in columns
// (used for proportional spacing); the space has no ink and width 3.
struct Glyph {
    std::array<std::uint8_t, kGlyphHeight> rows{};
    int left = 0;
    int width = 0;
    bool ink(int col, int row) const { return (rows[row] >> (kGlyphWidth - 1 - col)) & 1; }
};

// Decodes the sheet once (on first use) into a table of glyphs. Characters outside 32..126 are
// drawn as '?'.
inline const Glyph& glyph(char c) {
    static const std::array<Glyph, kLastChar - kFirstChar + 1> table = [] {
        std::array<Glyph, kLastChar - kFirstChar + 1> glyphs{};
        for (int index = 0; index < static_cast<int>(glyphs.size()); ++index) {
            int block = index / kGlyphsPerBlock, column = index % kGlyphsPerBlock;
            Glyph& g = glyphs[index];
            int min_col = kGlyphWidth, max_col = -1;
            for (int row = 0; row < kGlyphHeight; ++row) {
                std::string line = kSheet[block * kGlyphHeight + row];
                for (int col = 0; col < kGlyphWidth; ++col) {
                    std::size_t at = static_cast<std::size_t>(column * (kGlyphWidth + 1) + col);
                    if (at >= line.size())
                        throw std::logic_error("font.h: sheet line too short in block " +
                                               std::to_string(block));
                    if (line[at] == '#') {
                        g.rows[row] |= static_cast<std::uint8_t>(1u << (kGlyphWidth - 1 - col));
                        if (col < min_col) min_col = col;
                        if (col > max_col) max_col = col;
                    }
                }
            }
            if (max_col < 0) { g.left = 0; g.width = 3; }   // the space
            else { g.left = min_col; g.width = max_col - min_col + 1; }
        }
        return glyphs;
    }();
    int code = static_cast<unsigned char>(c);
    if (code < kFirstChar || code > kLastChar) code = '?';
    return table[code - kFirstChar];
}

}  // namespace mg::plot::font
