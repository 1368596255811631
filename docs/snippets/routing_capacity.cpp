// docs/nn/routing.md: the capacity example of the page, run. 4 tokens, 3 experts, k = 2, the
// logits set by hand; capacity ceil(2 * 4 * cf / 3); which slots survive under each priority;
// then one training step of a layer with every option on, adding the single aux_loss term.
#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/moe.h"
#include "docs/snippets/expect.h"

using namespace mg;

int main() {
    // logits[t][e] for x = I: W[e][t] = logits[t][e].
    //   token 0 (3, 1, 0)  token 1 (2, 0, 1)  token 2 (0, 2, 1)  token 3 (1, 4, 0)
    const std::vector<double> w = {3, 2, 0, 1, /* e1 */ 1, 0, 2, 4, /* e2 */ 0, 1, 1, 0};
    std::vector<double> eye(16, 0.0);
    for (int i = 0; i < 4; ++i) eye[i * 5] = 1;
    const Tensor x = Tensor::from_vector(eye, {4, 4});
    auto route = [&](double cf, nn::CapacityPriority priority) {
        Generator gen(0);
        nn::TopKRouter router({.d_in = 4, .experts = 3, .k = 2, .dtype = DType::Float64, .capacity_factor = cf,
                               .capacity_priority = priority},
                              gen);
        NoGradGuard no_grad;
        router.weight.copy_(Tensor::from_vector(w, {3, 4}));
        return router(x);
    };

    // cf = 0.5: capacity ceil(1.33) = 2. First choices (t0 e0, t1 e0, t2 e1, t3 e1) fill e0 and e1,
    // so the second choices t0 -> e1 and t3 -> e0 are dropped; t1 and t2 fit in e2.
    nn::Routing r = route(0.5, nn::CapacityPriority::FirstCome);
    EXPECT(r.capacity == 2);
    EXPECT(r.flat_expert_ids() == (std::vector<int64_t>{0, -1, 0, 2, 1, 2, 1, -1}));
    EXPECT(r.dropped_slots == 2 && r.dropped_tokens == 2 && r.dropped_fraction() == 0.5);
    std::printf("cf 0.5, first come:   expert ids %s\n", "0 -1 | 0 2 | 1 2 | 1 -1");

    // cf = 0.25: capacity 1. First come keeps token 2's first choice (gate 0.73) in e1; highest
    // gate keeps token 3's (gate 0.95) instead.
    nn::Routing first = route(0.25, nn::CapacityPriority::FirstCome);
    nn::Routing best = route(0.25, nn::CapacityPriority::HighestGate);
    EXPECT(first.flat_expert_ids() == (std::vector<int64_t>{0, -1, -1, 2, 1, -1, -1, -1}));
    EXPECT(best.flat_expert_ids() == (std::vector<int64_t>{0, -1, -1, 2, -1, -1, 1, -1}));
    std::printf("cf 0.25, first come:   token 2 keeps e1; highest gate: token 3 keeps e1\n");

    // A layer with the options on: one term, out.aux_loss, carries every auxiliary loss.
    Generator gen(1);
    nn::MoEConfig c{.d_in = 4, .hidden = {8}, .d_out = 2, .experts = 3, .k = 1, .softmax_over_topk = false,
                    .renormalize = false};
    c.noise = nn::RouterNoise::NoisyTopK;
    c.importance_alpha = c.load_alpha = 0.1;
    c.z_loss_alpha = 1e-3;
    c.capacity_factor = 1.25;
    nn::SpecializedExpertNetwork moe(c, gen);
    Tensor batch = randn({16, 4}, gen);
    auto out = moe(batch);
    const nn::Routing& rr = out.routing;
    const double parts = rr.balance_loss.item() + rr.importance_loss.item() + rr.load_loss.item() + rr.z_loss.item();
    EXPECT(std::abs(out.aux_loss.item() - parts) < 1e-6);
    EXPECT(rr.capacity == 7);  // ceil(1 * 16 * 1.25 / 3) = ceil(6.67)
    (sum(out.y) + out.aux_loss).backward();
    EXPECT(moe.router->noise_weight.grad().defined());  // the noise's std is learned
    std::printf("layer: aux_loss %.4f = balance + importance + load + z; %lld of 16 tokens dropped\n",
                out.aux_loss.item(), (long long)rr.dropped_tokens);
    return 0;
}
