"""The interface teachers and students share: stage maps, and a head of global average pooling
and one linear layer (nas_kd.models.staged)."""

import torch
from torch import nn

from nas_kd.models.staged import ClassifierHead, StagedNet


def test_the_head_averages_each_map_then_applies_its_linear_layer():
    torch.manual_seed(0)
    head = ClassifierHead(4, 3).eval()
    x = torch.randn(2, 4, 5, 7)
    assert torch.allclose(head(x), head.fc(x.mean((2, 3))), atol=1e-6)


def test_the_heads_dropout_acts_only_when_asked_and_only_in_training():
    torch.manual_seed(0)
    x = torch.randn(64, 32, 2, 2)
    plain, dropped = ClassifierHead(32, 3).train(), ClassifierHead(32, 3, dropout=0.5).train()
    assert torch.equal(plain(x), plain(x)) and not torch.equal(dropped(x), dropped(x))
    dropped.eval()
    assert torch.allclose(dropped(x), dropped.fc(x.mean((2, 3))), atol=1e-6)


class TwoStages(StagedNet):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.stages = nn.ModuleList([nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Conv2d(3, 4, 3, stride=2, padding=1)])
        self.head = ClassifierHead(4, 5)
        self.stage_channels, self.num_classes = (3, 4), 5


def test_stage_maps_are_each_stages_output_and_both_forwards_agree():
    torch.manual_seed(0)
    net, x = TwoStages().eval(), torch.randn(2, 1, 8, 8)
    maps, logits = net.forward_stages(x)
    first = net.stages[0](net.stem(x))
    assert torch.equal(maps[0], first) and torch.equal(maps[1], net.stages[1](first))
    assert torch.equal(logits, net.head(maps[1])) and torch.equal(net(x), logits)
