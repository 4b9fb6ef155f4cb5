"""MindCV's model names, so its configs run unchanged: each maps to the timm or torchvision model of the same
architecture (depth, width, groups, input size), found by building both and comparing their parameters' shapes;
a name with no equivalent is refused with the closest family that exists, never replaced by another size.

Names are matched case-insensitively (MindCV writes `BiT_resnet50`). A timm or torchvision name means their model,
pretrained weights and all (regnet_x_800mf, an alias before torchvision had the name, stays timm's);
`DIFFERENCES` says where MindCV's model of that name differs and which name builds MindCV's (logged when it is
built, listed in docs/mindcv.md). The mapping was checked against mindcv 0.3.0 built in
MindSpore: equal parameter counts and tensor shapes, but for the differences listed.
"""

from __future__ import annotations

from typing import Any

# MindCV name (lower case) → timm/torchvision name, or (name, keyword arguments its entrypoint forwards to the model
# class: the same family at MindCV's depth or width, which timm registers no name for).
MINDCV_MODELS: dict[str, str | tuple[str, dict[str, Any]]] = {
    "bit_resnet50": "resnetv2_50x1_bit", "bit_resnet50x3": "resnetv2_50x3_bit",
    "bit_resnet101": "resnetv2_101x1_bit",
    "convit_tiny_plus": ("convit_tiny", {"embed_dim": 64}), "convit_small_plus": ("convit_small", {"embed_dim": 64}),
    "convit_base_plus": ("convit_base", {"embed_dim": 64}),
    "crossvit_9": "crossvit_9_240", "crossvit_15": "crossvit_15_240", "crossvit_18": "crossvit_18_240",
    "efficientnet_v2_xl": "efficientnetv2_xl",
    "halonet_50t": "halonet50ts",
    # MAE's fine-tuned encoders: a ViT read out by average pooling (fc_norm) rather than the class token
    "mae_b_16_224_finetune": ("vit_base_patch16_224", {"global_pool": "avg"}),
    "mae_l_16_224_finetune": ("vit_large_patch16_224", {"global_pool": "avg"}),
    "mae_h_14_224_finetune": ("vit_huge_patch14_224", {"global_pool": "avg"}),
    "mlp_mixer_s_p16": "mixer_s16_224", "mlp_mixer_s_p32": "mixer_s32_224", "mlp_mixer_b_p16": "mixer_b16_224",
    "mlp_mixer_b_p32": "mixer_b32_224", "mlp_mixer_l_p16": "mixer_l16_224", "mlp_mixer_l_p32": "mixer_l32_224",
    "mnasnet_130": "mnasnet1_3",
    "mobilenet_v1_025": ("mobilenetv1_100", {"channel_multiplier": 0.25, "act_layer": "relu"}),
    "mobilenet_v1_050": ("mobilenetv1_100", {"channel_multiplier": 0.5, "act_layer": "relu"}),
    "mobilenet_v1_075": ("mobilenetv1_100", {"channel_multiplier": 0.75, "act_layer": "relu"}),
    "mobilenet_v1_025_224": ("mobilenetv1_100", {"channel_multiplier": 0.25, "act_layer": "relu"}),
    "mobilenet_v1_050_224": ("mobilenetv1_100", {"channel_multiplier": 0.5, "act_layer": "relu"}),
    "mobilenet_v1_075_224": ("mobilenetv1_100", {"channel_multiplier": 0.75, "act_layer": "relu"}),
    "mobilenet_v1_100": "mobilenetv1_100", "mobilenet_v1_100_224": "mobilenetv1_100",
    "mobilenet_v2_075": "mobilenetv2_075", "mobilenet_v2_100": "mobilenetv2_100", "mobilenet_v2_140": "mobilenetv2_140",
    "mobilenet_v2_050": "mobilenetv2_050",
    # the suffix is the input size MindCV trains at, not another network
    **{f"mobilenet_v2_{width}_{size}": f"mobilenetv2_{width}" for width in ("035", "050", "075", "100")
       for size in (96, 128, 160, 192, 224)},
    "mobilenet_v2_130_224": ("mobilenet_v2", {"width_mult": 1.3}),
    "mobilenet_v3_small_100": "mobilenetv3_small_100", "mobilenet_v3_large_100": "mobilenetv3_large_100",
    # timm's mobilenetv3_*_075 round their channels otherwise; torchvision's width_mult matches MindCV's
    "mobilenet_v3_small_075": ("mobilenet_v3_small", {"width_mult": 0.75}),
    "mobilenet_v3_large_075": ("mobilenet_v3_large", {"width_mult": 0.75}),
    "mobilevit_small": "mobilevit_s", "mobilevit_x_small": "mobilevit_xs", "mobilevit_xx_small": "mobilevit_xxs",
    "pit_ti": "pit_ti_224", "pit_xs": "pit_xs_224", "pit_s": "pit_s_224", "pit_b": "pit_b_224",
    # regnet_x_400mf, regnet_y_400mf, regnet_y_800mf, regnet_y_16gf are torchvision's (see DIFFERENCES)
    "regnet_x_200mf": "regnetx_002", "regnet_x_600mf": "regnetx_006", "regnet_x_800mf": "regnetx_008",
    "regnet_y_200mf": "regnety_002", "regnet_y_600mf": "regnety_006",
    "regnet_x_4_0gf": "regnetx_040", "regnet_x_6_4gf": "regnetx_064", "regnet_x_8_0gf": "regnetx_080",
    "regnet_x_12gf": "regnetx_120", "regnet_y_4_0gf": "regnety_040", "regnet_y_6_4gf": "regnety_064",
    "regnet_y_8_0gf": "regnety_080", "regnet_y_12gf": "regnety_120",
    "res2net50": "res2net50_26w_4s", "res2net101": "res2net101_26w_4s",
    "res2net50_v1b": "res2net50d", "res2net101_v1b": "res2net101d",  # v1b: deep stem and average-pool shortcut
    "res2net152": ("res2net101_26w_4s", {"layers": (3, 8, 36, 3)}),
    "res2net152_v1b": ("res2net101d", {"layers": (3, 8, 36, 3)}),
    "resnest14": "resnest14d", "resnest26": "resnest26d", "resnest50": "resnest50d", "resnest101": "resnest101e",
    "resnest200": "resnest200e", "resnest269": "resnest269e",
    "resnext152_64x4d": ("resnext101_64x4d", {"layers": (3, 8, 36, 3)}),
    "repvgg_b1g2": ("repvgg_b1", {"groups": 2}),
    "rexnet_09": ("rexnet_100", {"width_mult": 0.9}), "rexnet_10": "rexnet_100", "rexnet_13": "rexnet_130",
    "rexnet_15": "rexnet_150", "rexnet_20": "rexnet_200",
    "seresnext26_32x4d": "legacy_seresnext26_32x4d",
    "swin_tiny": "swin_tiny_patch4_window7_224", "swin_small": "swin_small_patch4_window7_224",
    "swin_base": "swin_base_patch4_window7_224",
    **{f"swinv2_{size}_window{window}": f"swinv2_{size}_window{window}_256" for size in ("tiny", "small", "base")
       for window in (8, 16)},
    "vit_b_16_224": "vit_base_patch16_224", "vit_b_32_224": "vit_base_patch32_224",
    "vit_l_16_224": "vit_large_patch16_224", "vit_l_32_224": "vit_large_patch32_224",
    "vit_b_16_384": "vit_base_patch16_384", "vit_b_32_384": "vit_base_patch32_384",
    "vit_l_16_384": "vit_large_patch16_384",
    "volo_d1": "volo_d1_224", "volo_d2": "volo_d2_224", "volo_d3": "volo_d3_224", "volo_d4": "volo_d4_224",
    "volo_d5": "volo_d5_224",
    "xception": "legacy_xception",
}
# MindCV names timm and torchvision have no architecture for: why, and the closest family that exists.
NO_EQUIVALENT: dict[str, str] = {
    "cmt_tiny": "CMT is in neither timm nor torchvision; the closest hybrid family is timm's coat_lite_* or "
                "edgenext_*",
    "pvt_tiny": "timm has PVT v2 only (pvt_v2_b0 ... pvt_v2_b5), not PVT v1's spatial-reduction blocks; the closest "
                "is pvt_v2_b1",
    "repmlp_t224": "RepMLPNet is in neither timm nor torchvision; the closest MLP family is timm's resmlp_* or "
                   "mixer_*",
    "shufflenet_v1_g3_05": "ShuffleNet v1 is in neither timm nor torchvision; the closest is torchvision's "
                           "shufflenet_v2_x0_5 ... shufflenet_v2_x2_0",
    "visformer_tiny_v2": "timm's Visformer has tiny and small only, not the v2 stages; the closest are visformer_tiny "
                         "and visformer_small",
    "mae_b_16_224_pretrain": "MAE's pre-training model (encoder, decoder and masking) is no classifier; fine-tune "
                             "MindCV's mae_*_finetune, or timm's MAE encoders (vit_base_patch16_224.mae)",
    "mlp_mixer_h_p14": "timm's MLP-Mixer stops at L (mixer_l16_224, mixer_l32_224); there is no H/14",
    "pnasnet": "timm has PNASNet-5 Large only (pnasnet5large), not MindCV's mobile PNASNet; the closest mobile NAS "
               "family is mnasnet_*",
    "nasnet_a_4x1056": "timm has NASNet-A Large (nasnetalarge, 6@4032), not NASNet-A Mobile (4@1056); the closest "
                       "mobile NAS family is mnasnet_*",
}
# the rest of each refused family, refused for the same reason
_FAMILIES = {"cmt_tiny": ("cmt_xsmall", "cmt_small", "cmt_base"), "pvt_tiny": ("pvt_small", "pvt_medium", "pvt_large"),
             "repmlp_t224": ("repmlp_t256", "repmlp_b224", "repmlp_b256", "repmlp_d256", "repmlp_l256"),
             "shufflenet_v1_g3_05": tuple(f"shufflenet_v1_g{g}_{w}" for g in (3, 8) for w in ("05", "10", "15", "20")),
             "visformer_tiny_v2": ("visformer_small_v2",),
             "mae_b_16_224_pretrain": ("mae_l_16_224_pretrain", "mae_h_16_224_pretrain")}
NO_EQUIVALENT |= {member: NO_EQUIVALENT[family] for family, members in _FAMILIES.items() for member in members
                  if member not in NO_EQUIVALENT}


# Where the network built differs from MindCV's model of the same name (the same depth and width unless said).
DIFFERENCES: dict[str, str] = {
    "regnet_x_400mf": "torchvision's network of this name is wider (5.50 M parameters) than MindCV's, pycls' "
                      "RegNetX-400MF (5.16 M): for MindCV's, use timm's regnetx_004",
    "regnet_y_800mf": "torchvision's network of this name is larger (6.43 M parameters) than MindCV's, pycls' "
                      "RegNetY-800MF (6.26 M): for MindCV's, use timm's regnety_008",
    "skresnext50_32x4d": "MindCV's is an ungrouped SK-ResNet-50 (37.2 M parameters); timm's is grouped 32x4d "
                         "(27.5 M), and that is the one built",
    "googlenet": "MindCV's auxiliary heads differ from torchvision's (6.99 M parameters with them, torchvision "
                 "6.62 M without)",
    "inception_v3": "MindCV's counts its auxiliary head (27.2 M parameters), which tunecv builds for aux_factor "
                    "above 0 only (23.8 M without)",
    "hrnet_w32": "timm's head convolution has a bias, MindCV's not (3,880 parameters)",
    "hrnet_w48": "timm's head convolution has a bias, MindCV's not (3,864 parameters)",
    "mobilevit_small": "MindCV adds a BatchNorm and SiLU after each block's local 1x1 convolution (1,152 parameters)",
    "mobilevit_x_small": "MindCV adds a BatchNorm and SiLU after each block's local 1x1 convolution (720 parameters)",
    "mobilevit_xx_small": "MindCV adds a BatchNorm and SiLU after each block's local 1x1 convolution "
                          "(480 parameters)",
    "mobilenet_v1_100": "timm's activation is ReLU6 (its ImageNet weights were trained so), MindCV's ReLU",
    "resnetv2_50": "MindCV wraps the pre-activation blocks in a post-activation stem and downsampling (norms "
                   "elsewhere, 3,748 parameters)",
    "resnetv2_101": "MindCV wraps the pre-activation blocks in a post-activation stem and downsampling (norms "
                    "elsewhere, 3,720 parameters)",
    "shufflenet_v2_x0_5": "MindCV's classifier has no bias (the head is replaced when fine-tuning anyway)",
    "shufflenet_v2_x1_0": "MindCV splits each stage's first unit's channels otherwise (156 parameters)",
    "shufflenet_v2_x1_5": "MindCV splits each stage's first unit's channels otherwise (3,076 parameters)",
    "shufflenet_v2_x2_0": "MindCV splits each stage's first unit's channels otherwise (8,604 parameters)",
    **{name: "MindCV's attention projections have no bias" for name in (
        "cait_xxs24_224", "cait_xs24_384", "cait_s24_224", "cait_s24_384", "cait_s36_384", "cait_m36_384",
        "cait_m48_448")},
    **{name: "MindCV's patch embedding has no bias" for name in (
        "mlp_mixer_s_p16", "mlp_mixer_s_p32", "mlp_mixer_b_p16", "mlp_mixer_b_p32", "mlp_mixer_l_p16",
        "mlp_mixer_l_p32")},
    **{name: "MindCV's convolutions have no bias" for name in ("vgg11", "vgg13", "vgg16", "vgg19")},
}


def mindcv_target(name: str) -> tuple[str, dict[str, Any]] | None:
    """(timm/torchvision name, keyword arguments) of a MindCV model name, any case; None for another name."""
    target = MINDCV_MODELS.get(name.lower())
    if target is None:
        return None
    return (target, {}) if isinstance(target, str) else (target[0], dict(target[1]))


def difference(name: str) -> str | None:
    """How MindCV's model of this name differs from the one built, or None."""
    return DIFFERENCES.get(name.lower())


def no_equivalent(name: str) -> str | None:
    """Why a MindCV model name has no timm or torchvision architecture, or None."""
    return NO_EQUIVALENT.get(name.lower())
