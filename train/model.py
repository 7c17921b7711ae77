"""UNet3+ (Huang et al. 2020) with full-scale skips, deep supervision and a
classification-guided module.  This file is the reference: the C engine in
src/model/ computes exactly this forward pass (eval mode) from the tensors of
this module's state_dict, so every name and every resampling rule here is part
of the weights-file contract.

Contract points the C side depends on:
  * every 3x3 conv has padding 1 and a bias, followed by BatchNorm(eps=1e-5)
    and ReLU (except the output heads);
  * encoder down-sampling is max-pool k=2 s=2 with ceil_mode, so feature map
    sizes are ceil(H / 2^k) for any input size;
  * a skip from a finer encoder level i into decoder level d is max-pool with
    kernel = stride = 2^(d-i), ceil_mode;
  * a skip from a coarser level j into decoder level d is bilinear
    (align_corners=False) resampling to the exact size of level d;
  * decoder branches are concatenated in source-level order 1..5;
  * the presence (CGM) head is conv1x1 on the bottleneck, global max pool,
    sigmoid; an organ whose presence is below the threshold gets an empty mask.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSES = ("large_bowel", "small_bowel", "stomach")


class ConvBNReLU(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Stage(nn.Sequential):
    """Two conv3x3+BN+ReLU units (one encoder stage)."""

    def __init__(self, cin, cout):
        super().__init__(ConvBNReLU(cin, cout), ConvBNReLU(cout, cout))


def pool_to(x, k):
    if k == 1:
        return x
    return F.max_pool2d(x, kernel_size=k, stride=k, ceil_mode=True)


def resize_to(x, size):
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UNet3Plus(nn.Module):
    def __init__(self, width=16, in_channels=1, n_classes=3):
        super().__init__()
        w = width
        self.width = w
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.chs = [w, 2 * w, 4 * w, 8 * w, 16 * w]
        up = 5 * w
        self.enc = nn.ModuleList()
        cin = in_channels
        for c in self.chs:
            self.enc.append(Stage(cin, c))
            cin = c
        # dec[d] for decoder level d = 4,3,2,1 stored at index d-1 (0..3);
        # branch j (source level 1..5) reads an encoder map for j <= d and the
        # bottleneck (j == 5) or a decoder map (5w channels) for j > d.
        self.dec = nn.ModuleList()
        for d in range(1, 5):
            branches = nn.ModuleList()
            for j in range(1, 6):
                if j <= d or j == 5:
                    src = self.chs[j - 1]
                else:
                    src = up
                branches.append(ConvBNReLU(src, w))
            fuse = ConvBNReLU(up, up)
            self.dec.append(nn.ModuleDict({"branch": branches, "fuse": fuse}))
        self.head = nn.Conv2d(up, n_classes, 3, padding=1, bias=True)
        # Deep supervision (training only): levels 2,3,4 from 5w, level 5 from 16w.
        self.ds = nn.ModuleList(
            [nn.Conv2d(up, n_classes, 3, padding=1) for _ in range(3)]
            + [nn.Conv2d(self.chs[4], n_classes, 3, padding=1)]
        )
        # Classification-guided module: per-organ presence from the bottleneck.
        self.cls = nn.Conv2d(self.chs[4], n_classes, 1, bias=True)

    def forward(self, x, deep_supervision=False):
        H, W = x.shape[-2:]
        e = []
        h = x
        for i, stage in enumerate(self.enc):
            if i > 0:
                h = pool_to(h, 2)
            h = stage(h)
            e.append(h)
        sizes = [t.shape[-2:] for t in e]
        # levels indexed 1..5; level 5 is the bottleneck e5 = hd5
        hd = {5: e[4]}
        for d in (4, 3, 2, 1):
            mod = self.dec[d - 1]
            parts = []
            for j in range(1, 6):
                if j < d:
                    src = pool_to(e[j - 1], 2 ** (d - j))
                elif j == d:
                    src = e[j - 1]
                else:
                    src = resize_to(hd[j], sizes[d - 1])
                parts.append(mod["branch"][j - 1](src))
            hd[d] = mod["fuse"](torch.cat(parts, 1))
        logits = self.head(hd[1])
        presence_logit = torch.amax(self.cls(e[4]), dim=(2, 3))
        if not deep_supervision:
            return logits, presence_logit
        aux = []
        for k, lvl in enumerate((2, 3, 4, 5)):
            aux.append(resize_to(self.ds[k](hd[lvl]), (H, W)))
        return logits, presence_logit, aux


@torch.no_grad()
def predict_probs(model, x, presence_threshold=0.5):
    """Eval-mode inference at the model grid: sigmoid probabilities
    (N,C,H,W) and presence probabilities (N,C).  Gating is applied by the
    caller after resampling to native size (see preprocess.postprocess)."""
    logits, pres = model(x)
    return torch.sigmoid(logits), torch.sigmoid(pres)
