"""Detectors: built for K classes + background; a checkpoint for other classes loads with only the class head
replaced (every other tensor identical to the checkpoint's), anything else that does not fit is one error; the
backbone freezes as torchvision's trainable_backbone_layers does."""

from __future__ import annotations

import pytest
import torch

from tunecv.detection.models import DETECTORS, create_detector, load_detector_weights
from tunecv.errors import UserError

SMALL = {"min_size": 64, "max_size": 64}


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_fpn", "maskrcnn_resnet50_fpn",
                                  "retinanet_resnet50_fpn"])
def test_head_swap_keeps_every_other_tensor(name):
    torch.manual_seed(0)
    source = create_detector(name, 3, **SMALL)  # "set A": 3 classes
    state = {k: v.clone() for k, v in source.state_dict().items()}
    target = create_detector(name, 2, **SMALL)  # "set B": 2 other classes
    fresh_head = {k: v.clone() for k, v in target.state_dict().items() if k.startswith(DETECTORS[name].class_head)}
    replaced = load_detector_weights(target, name, state, source="set A")
    loaded = target.state_dict()
    assert replaced and set(replaced) == set(fresh_head)  # exactly the class head, for 2 + 1 outputs now
    for key, tensor in loaded.items():
        if key in fresh_head:
            assert torch.equal(tensor, fresh_head[key]) and tensor.shape != state[key].shape
        else:
            assert torch.equal(tensor, state[key]), key


def test_a_checkpoint_of_another_detector_is_one_error():
    state = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 2, **SMALL).state_dict()
    with pytest.raises(UserError, match=r"is not a fasterrcnn_resnet50_fpn checkpoint: \d+ missing"):
        load_detector_weights(create_detector("fasterrcnn_resnet50_fpn", 2, **SMALL), "fasterrcnn_resnet50_fpn",
                              state, source="x.pth")


def test_unknown_detector_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean fasterrcnn_resnet50_fpn"):
        create_detector("fasterrcnn_resnet50", 2)


def test_predictions_have_the_new_class_count():
    model = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 2, **SMALL).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 80, 96)])[0]
    assert set(out) == {"boxes", "labels", "scores"}
    assert model.roi_heads.box_predictor.cls_score.out_features == 3  # 2 classes + background


@pytest.mark.parametrize("trainable, frozen_stages", [(0, {"layer1", "layer2", "layer3", "layer4", "conv1"}),
                                                      (3, {"layer1", "conv1"}), (5, set())])
def test_trainable_backbone_layers_freeze_the_lower_stages(trainable, frozen_stages):
    model = create_detector("fasterrcnn_resnet50_fpn", 2, trainable_backbone_layers=trainable, **SMALL)
    frozen = {name.split(".")[0] for name, p in model.backbone.body.named_parameters() if not p.requires_grad}
    assert frozen == frozen_stages
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())  # the FPN and heads always train
    with pytest.raises(UserError, match="out of range"):
        create_detector("fasterrcnn_resnet50_fpn", 2, trainable_backbone_layers=6)


def test_a_checkpoint_trained_with_batchnorm_loads_into_frozen_batchnorm():
    trained = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 3, frozen_bn=False, **SMALL)
    with torch.no_grad():
        for module in trained.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)  # statistics a training run would have gathered
    state = trained.state_dict()
    model = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 2, frozen_bn=True, **SMALL)
    load_detector_weights(model, "fasterrcnn_mobilenet_v3_large_fpn", state, source="set A")
    loaded = model.state_dict()
    means = [k for k in state if k.startswith("backbone.body") and k.endswith("running_mean")]
    assert means and all(torch.equal(loaded[k], state[k]) for k in means)  # the statistics are now fixed


def test_frozen_batchnorm_weights_load_into_batchnorm_that_trains():
    """torchvision's COCO weights hold frozen BatchNorm (no batch counts): freeze_bn false still loads them."""
    frozen = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 3, frozen_bn=True, **SMALL)
    state = frozen.state_dict()
    assert not any(k.endswith("num_batches_tracked") for k in state)
    model = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 2, frozen_bn=False, **SMALL)
    load_detector_weights(model, "fasterrcnn_mobilenet_v3_large_fpn", state, source="COCO")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k.startswith("backbone."))
    assert any(k.endswith("num_batches_tracked") for k in loaded)


def test_several_min_sizes_train_at_each_and_evaluate_at_the_last():
    """Multi-scale training (MMDetection's img_scale list): torchvision's transform draws one per image."""
    torch.manual_seed(0)
    model = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 2, min_size=(48, 64, 80), max_size=200)
    image = [torch.rand(3, 100, 100)]
    target = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "labels": torch.tensor([1])}]
    model.train()
    sizes = {model.transform(image, [dict(t) for t in target])[0].image_sizes[0] for _ in range(30)}
    assert sizes == {(48, 48), (64, 64), (80, 80)}
    model.eval()
    assert model.transform(image)[0].image_sizes == [(80, 80)]
