from __future__ import annotations

import pytest
import torch

from indexer.errors import UserError
from reid.model import GeM, ModelSpec, build_model, load_model, save_model
from reid.weights import copy_in_order, local_weights_path


@pytest.mark.parametrize("name", ["mobilenetv2_100", "tf_efficientnet_lite0"])
def test_packaged_imagenet_weights_load_into_timm(name):
    path = local_weights_path(name)
    if path is None:
        pytest.skip(f"the package with {name} weights is not installed")
    model, source = build_model(ModelSpec(backbone=name, height=64, width=32))
    assert source.startswith("package:")
    raw = [v for v in torch.load(path, map_location="cpu", weights_only=True).values() if torch.is_tensor(v)]
    ours = list(model.backbone.state_dict().values())
    assert torch.equal(raw[0], ours[0]) and torch.equal(raw[len(ours) - 1], ours[-1])
    model.eval()
    x = torch.randn(3, 3, 64, 32)
    emb = model(x)
    assert emb.shape == (3, model.dim) == (3, 1280)
    # ImageNet features are not those of a random network
    random, _ = build_model(ModelSpec(backbone=name, height=64, width=32), pretrained=False)
    assert not torch.allclose(model.backbone.forward_features(x), random.eval().backbone.forward_features(x))


def test_copy_in_order_checks_shapes():
    target = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    good = {"a": torch.ones(3, 2), "b": torch.zeros(3), "c": torch.ones(1, 3), "d": torch.zeros(1),
            "fc.w": torch.zeros(1000, 3), "fc.b": torch.zeros(1000)}
    copy_in_order(target, good)
    assert torch.equal(target[0].weight, torch.ones(3, 2))
    with pytest.raises(ValueError, match="does not fit"):
        copy_in_order(target, {"a": torch.ones(2, 2), "b": torch.zeros(3), "c": torch.ones(1, 3), "d": torch.zeros(1)})
    with pytest.raises(ValueError, match="tensors"):
        copy_in_order(target, {"a": torch.ones(3, 2)})


def test_gem_p1_is_average_pooling():
    gem = GeM(p=1.0)
    x = torch.rand(2, 5, 4, 3)
    torch.testing.assert_close(gem(x), x.mean(dim=(2, 3)))


def test_save_load_roundtrip(tmp_path):
    model, _ = build_model(ModelSpec(height=64, width=32), pretrained=False)
    model.eval()
    save_model(model, tmp_path / "m", info={"note": "x"})
    loaded, meta = load_model(tmp_path / "m")
    x = torch.randn(2, 3, 64, 32)
    torch.testing.assert_close(model(x), loaded(x))
    assert meta["info"]["note"] == "x" and meta["dim"] == 1280
    with pytest.raises(UserError, match="not a ReID model folder"):
        load_model(tmp_path)


def test_unknown_backbone_is_a_user_error():
    with pytest.raises(UserError, match="timm model name"):
        build_model(ModelSpec(backbone="no_such_net_42"), pretrained=False)


def test_embeddings_do_not_depend_on_the_batch_size():
    import numpy as np
    from PIL import Image

    from reid.evaluation import default_image_batch, embed_images

    assert default_image_batch("cpu") == 32 and default_image_batch("cuda:0") == 128
    model, _ = build_model(ModelSpec(backbone="mobilenetv2_100", height=64, width=32), pretrained=False)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)) for _ in range(37)]
    default = embed_images(model, images)  # 32 on this CPU: a full batch and a partial one
    np.testing.assert_allclose(default, embed_images(model, images, batch_size=5), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(default, axis=1), 1.0, atol=1e-5)
