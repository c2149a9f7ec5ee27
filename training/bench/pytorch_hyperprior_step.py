"""The ncodec hyperprior network in PyTorch, for a side-by-side training-speed comparison.

Same layers, sizes, loss and optimizer as `ncodec train --codec hyperprior` (N=64, M=256 (`--m`),
simplified GDN, the linear 16x16 block-transform shortcut beside g_a and g_s (`--no-shortcut` drops
it, like ncodec's flag), factorized bottleneck with filters (3,3,3), per-sample lambda, Adam): only
the framework differs. Random data of the same shape is used, so decoding JPEGs is not measured (it is
under 1 % of a step in ncodec's profile).

    pip install torch
    python3 training/bench/pytorch_hyperprior_step.py --steps 20 --threads 2

Prints the median seconds per step after two warm-up steps.
"""

import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LAMBDAS = [0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800]


class Gdn(nn.Module):
    def __init__(self, c, inverse=False):
        super().__init__()
        g = torch.full((c, c), 1e-3)
        g.fill_diagonal_(math.sqrt(0.1))
        self.gamma = nn.Parameter(g)
        self.beta = nn.Parameter(torch.ones(c))
        self.inverse = inverse

    def forward(self, x):
        c = x.shape[1]
        norm = F.conv2d(x.abs(), (self.gamma ** 2).view(c, c, 1, 1), self.beta ** 2 + 1e-6)
        return x * norm if self.inverse else x / norm


def down(i, o):
    return nn.Conv2d(i, o, 5, 2, 2)


def up(i, o):
    return nn.ConvTranspose2d(i, o, 5, 2, 2, 1)


class Bottleneck(nn.Module):
    def __init__(self, c, filters=(1, 3, 3, 3, 1)):
        super().__init__()
        scale = 10.0 ** (1 / (len(filters) - 1))
        self.m = nn.ParameterList()
        self.b = nn.ParameterList()
        self.f = nn.ParameterList()
        for i in range(len(filters) - 1):
            init = math.log(math.expm1(1 / scale / filters[i + 1]))
            self.m.append(nn.Parameter(torch.full((c, filters[i + 1], filters[i]), init)))
            self.b.append(nn.Parameter(torch.rand(c, filters[i + 1], 1) - 0.5))
            if i + 1 < len(filters) - 1:
                self.f.append(nn.Parameter(torch.zeros(c, filters[i + 1], 1)))

    def logits(self, x):
        h = x
        for i, m in enumerate(self.m):
            h = torch.matmul(F.softplus(m), h) + self.b[i]
            if i < len(self.f):
                h = h + torch.tanh(self.f[i]) * torch.tanh(h)
        return h

    def likelihood(self, z):
        b, c, h, w = z.shape
        x = z.transpose(0, 1).reshape(c, 1, -1)
        lo, hi = self.logits(x - 0.5), self.logits(x + 0.5)
        s = -torch.sign(lo + hi).detach()
        lik = (torch.sigmoid(s * hi) - torch.sigmoid(s * lo)).abs()
        return lik.reshape(c, b, h, w).transpose(0, 1)


def ste_round(x):
    return x + (torch.round(x) - x).detach()


def lower_bound(x, b):
    return x + (x.clamp_min(b) - x).detach()


class Hyperprior(nn.Module):
    def __init__(self, n=64, m=256, levels=8, shortcut=True):
        super().__init__()
        self.ga_short = nn.Conv2d(3, m, 16, 16) if shortcut else None
        self.gs_short = nn.ConvTranspose2d(m, 3, 16, 16) if shortcut else None
        self.ga = nn.ModuleList([down(3, n), down(n, n), down(n, n), down(n, m)])
        self.ga_gdn = nn.ModuleList([Gdn(n) for _ in range(3)])
        self.gs = nn.ModuleList([up(m, n), up(n, n), up(n, n), up(n, 3)])
        self.gs_igdn = nn.ModuleList([Gdn(n, True) for _ in range(3)])
        self.ha = nn.ModuleList([nn.Conv2d(m, n, 3, 1, 1), down(n, n), down(n, n)])
        self.hs_up = nn.ModuleList([up(n, m), up(m, m * 3 // 2)])
        self.hs_out = nn.Conv2d(m * 3 // 2, 2 * m, 3, 1, 1)
        mid = LAMBDAS[(levels - 1) // 2]
        g = torch.tensor([0.5 * math.log(l / mid) for l in LAMBDAS[:levels]]).unsqueeze(1).repeat(1, m)
        self.log_gain = nn.Parameter(g.clone())
        self.log_inv_gain = nn.Parameter(-g.clone())
        self.bottleneck = Bottleneck(n)

    def forward(self, x, levels):
        gain = self.log_gain[levels].exp()[:, :, None, None]
        inv = self.log_inv_gain[levels].exp()[:, :, None, None]
        h = x
        for i, conv in enumerate(self.ga):
            h = conv(h)
            if i < 3:
                h = self.ga_gdn[i](h)
        if self.ga_short is not None:
            h = h + self.ga_short(x)
        y = h * gain
        h = y
        for i, conv in enumerate(self.ha):
            h = conv(h)
            if i < 2:
                h = F.leaky_relu(h, 0.01)
        z = h
        z_lik = self.bottleneck.likelihood(z + torch.rand_like(z) - 0.5)
        h = ste_round(z)
        for conv in self.hs_up:
            h = F.leaky_relu(conv(h), 0.01)
        scales, means = self.hs_out(h).chunk(2, 1)
        scales = lower_bound(scales, 0.11)
        v = (y + torch.rand_like(y) - 0.5 - means).abs().neg()
        cdf = lambda t: 0.5 * (1 + torch.erf(t / math.sqrt(2)))
        y_lik = cdf((v + 0.5) / scales) - cdf((v - 0.5) / scales)
        h = (ste_round(y - means) + means) * inv
        y_hat = h
        for i, conv in enumerate(self.gs):
            h = conv(h)
            if i < 3:
                h = self.gs_igdn[i](h)
        if self.gs_short is not None:
            h = h + self.gs_short(y_hat)
        bits = lambda l: -torch.log(lower_bound(l, 1e-9)).flatten(1).sum(1) / math.log(2)
        return h, bits(y_lik) + bits(z_lik)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--no-shortcut", action="store_true")
    p.add_argument("--m", type=int, default=256)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = Hyperprior(m=a.m, shortcut=not a.no_shortcut)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    lambdas = torch.tensor(LAMBDAS)
    times = []
    for step in range(a.steps + 2):
        t = time.perf_counter()
        x = torch.rand(a.batch, 3, a.crop, a.crop)
        levels = torch.randint(0, 8, (a.batch,))
        x_hat, bits = model(x, levels)
        mse = ((x_hat - x) ** 2).flatten(1).mean(1)
        loss = (lambdas[levels] * 255 ** 2 * mse + bits / (a.crop * a.crop)).mean()
        opt.zero_grad()
        loss.backward()
        for prm in model.parameters():
            # burn's GradientClippingConfig::Norm clips each parameter's gradient by its own norm.
            torch.nn.utils.clip_grad_norm_([prm], 1.0)
        opt.step()
        loss.item()
        if step >= 2:
            times.append(time.perf_counter() - t)
    print(f"pytorch {torch.__version__}, {a.threads} threads, batch {a.batch}x{a.crop}^2: "
          f"median {statistics.median(times):.3f} s/step ({1 / statistics.median(times):.3f} steps/s) over {len(times)} steps")


if __name__ == "__main__":
    main()
