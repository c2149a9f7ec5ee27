"""Encode/decode seconds of CompressAI models on one image, for comparison with `ncodec encode/decode`.

Random weights (timing does not depend on training). Models: bmshj2018-hyperprior at quality 4
(N=128, M=192), as the hyperprior issue asks, and a mean-scale hyperprior with ncodec's shipped size
(N=64, M=128).

    pip install torch compressai
    python3 training/bench/compressai_codec_time.py ../shared/data/kodak/kodim01.png --threads 2
"""

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from compressai.models import MeanScaleHyperprior
from compressai.zoo import bmshj2018_hyperprior


def pad64(x):
    h, w = x.shape[2:]
    ph, pw = (64 - h % 64) % 64, (64 - w % 64) % 64
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")


def time_model(name, net, x, repeats):
    net.eval()
    net.update(force=True)
    enc, dec = [], []
    with torch.no_grad():
        for _ in range(repeats + 1):
            t = time.perf_counter()
            out = net.compress(pad64(x))
            enc.append(time.perf_counter() - t)
            t = time.perf_counter()
            net.decompress(out["strings"], out["shape"])
            dec.append(time.perf_counter() - t)
    enc, dec = enc[1:], dec[1:]
    print(f"{name}: encode {statistics.median(enc):.3f} s, decode {statistics.median(dec):.3f} s "
          f"(median of {repeats}, torch {torch.__version__}, {torch.get_num_threads()} threads)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("image")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    img = np.asarray(Image.open(a.image).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0)
    time_model("bmshj2018-hyperprior q4 (N=128, M=192)", bmshj2018_hyperprior(quality=4, pretrained=False), x, a.repeats)
    time_model("mbt2018-mean size of ncodec (N=64, M=128)", MeanScaleHyperprior(N=64, M=128), x, a.repeats)


if __name__ == "__main__":
    main()
