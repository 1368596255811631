// docs/nn/transformer.md: a small MoE language model, its forward, and its counters, with the
// numbers of the page's worked example (d = 8, L = 2, V = 16, T = 10, 4 experts of 8-12-8, k = 2).
#include <cstdio>

#include "docs/snippets/expect.h"
#include "nn/lm.h"

using namespace mg;

int main() {
    Generator gen(0);
    nn::LanguageModelConfig config{.vocab = 16, .d_model = 8, .layers = 2, .heads = 2, .max_seq = 10,
                                   .positions = nn::PositionKind::Learned, .ffn = nn::FFNKind::MoE,
                                   .ffn_hidden = 12, .experts = 4, .k = 2};
    nn::LanguageModel lm(config, gen);

    Tensor ids = randint(0, 16, {3, 10}, gen);   // (B, T) byte ids
    auto out = lm(ids);                          // logits (3, 10, 16), one routing per MoE layer
    EXPECT(out.logits.shape() == Shape({3, 10, 16}));
    EXPECT(out.routings.size() == 2);

    nn::ModelCounts c = lm.counts(10);
    std::printf("parameters %lld (active %lld), forward FLOPs per token %lld\n",
                (long long)c.parameters.total(), (long long)c.active_parameters.total(),
                (long long)c.flops_per_token.total());
    EXPECT(c.parameters.total() == 2752 && lm.num_parameters() == 2752);
    EXPECT(c.active_parameters.total() == 1904);          // 2 of the 4 experts idle in each layer
    EXPECT(c.flops_per_token.attention == 1376);          // 2 x (384 + 128 + 176)
    EXPECT(c.flops_per_token.experts == 1536);            // 2 layers x k=2 x 2 x (96 + 96)
    EXPECT(c.flops_per_token.total() == 3584);
    return 0;
}
