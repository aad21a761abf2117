"""A PyTorch reference of GSViT's decoder, written for the tests from the spec (gsvit.md §2).

Same module names as the original `Decoder` (fc, bn1d, conv1..5, bn1..4, res1, res2 with
Sequential indices, SE `fc.0`/`fc.2`), so its state_dict keys are the original's.
"""
import torch
from torch import nn


class SEAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


def residual_branch(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                         nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                         nn.BatchNorm2d(channels), nn.Sigmoid(), SEAttention(channels), nn.ReLU())


class ReferenceDecoder(nn.Module):
    def __init__(self, latent_dim=6144, widths=(1024, 512, 512, 256, 64), base=7,
                 predict_change=False):
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.widths, self.base, self.predict_change = widths, base, predict_change
        self.fc = nn.Linear(latent_dim, base * base * w0)
        self.bn1d = nn.BatchNorm1d(base * base * w0)
        self.conv1, self.bn1 = nn.ConvTranspose2d(w0, w1, 4, 2, 1), nn.BatchNorm2d(w1)
        self.conv2, self.bn2 = nn.ConvTranspose2d(w1, w2, 4, 2, 1), nn.BatchNorm2d(w2)
        self.conv3, self.bn3 = nn.ConvTranspose2d(w2, w3, 4, 2, 1), nn.BatchNorm2d(w3)
        self.conv4, self.bn4 = nn.ConvTranspose2d(w3, w4, 4, 2, 1), nn.BatchNorm2d(w4)
        self.conv5 = nn.ConvTranspose2d(w4, 3, 4, 2, 1)
        self.res2 = residual_branch(w4)
        self.res1 = residual_branch(w2)

    def forward(self, features):  # (B, C, s, s) encoder output
        x = features.reshape(features.shape[0], -1)
        x = nn.functional.gelu(self.bn1d(self.fc(x)))
        x = x.view(-1, self.widths[0], self.base, self.base)
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = self.res1(x) + x
        x = torch.relu(self.bn3(self.conv3(x)))
        x = torch.relu(self.bn4(self.conv4(x)))
        x = self.res2(x) + x
        x = self.conv5(x)
        return torch.tanh(x) if self.predict_change else torch.sigmoid(x)
