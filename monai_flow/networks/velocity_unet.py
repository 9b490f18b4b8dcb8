"""Velocity network for flow matching, built on MONAI's ``DiffusionModelUNet``.

Time conventions
----------------
* Generation / restoration flows: ``t`` in [0, 1]; t = 0 is the source (noise or degraded
  image), t = 1 the target (data or clean image).
* RelativeFlow: the time slot carries the step size ``dt > 0`` in quality time.

Either way the wrapper multiplies the value by ``time_scale`` (default 1000) before the UNet's
sinusoidal embedding, which was designed for the 0..1000 timestep range: user code never scales.

Precision: the time (or dt) is scaled, embedded and passed through the time MLP in float32 even under
``torch.autocast`` (bf16 / fp16 AMP, :mod:`monai_flow.networks.precision`): no timestep passes
through a 16-bit float. The output has the dtype of the input ``x``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import ControlNet, DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from monai.networks.blocks.selfattention import SABlock
from monai.utils import ensure_tuple_rep

from .precision import Float32Module

__all__ = ["VelocityUNet"]

_CLASS_MODES = ("embedding", "cross_attention")
_MASK_MODES = ("controlnet", "concat", "both")


class _LabelAndInterval(nn.Module):
    """Fills the UNet's class-embedding slot for flow maps: an embedding of the interval t - s,
    plus the class embedding when labels are used. Input (B, 2) floats: [label, interval].

    The interval branch's last layer starts at zero, so an untrained flow map is a velocity net.
    """

    def __init__(self, num_labels: int | None, base_channels: int, time_scale: float) -> None:
        super().__init__()
        dim = 4 * base_channels  # DiffusionModelUNet's time-embedding width
        self.base_channels, self.time_scale = base_channels, time_scale
        self.labels = nn.Embedding(num_labels, dim) if num_labels else None
        # float32 under autocast, like the time embedding (same state_dict keys as an nn.Sequential)
        self.interval = Float32Module(nn.Linear(base_channels, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.interval[-1].weight)
        nn.init.zeros_(self.interval[-1].bias)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        interval = packed[:, 1].to(torch.promote_types(packed.dtype, torch.float32))
        emb = self.interval(get_timestep_embedding(interval * self.time_scale, self.base_channels))
        return emb if self.labels is None else emb + self.labels(packed[:, 0].long())


class VelocityUNet(nn.Module):
    """``v = net(x, t, class_labels=None, mask=None, condition=None)``, same shape as ``x``.

    With ``flow_map=True`` it is a flow-map network ``u(x, s, target_time=t)``: the average
    velocity from time s (the ``t`` argument) to ``target_time`` (see :mod:`monai_flow.flows.flow_map`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the state ``x`` (B, in_channels, *spatial).
        out_channels: output channels (default ``in_channels``).
        channels, attention_levels, num_res_blocks, norm_num_groups, num_head_channels:
            passed to ``DiffusionModelUNet``; every channel count must be a multiple of
            ``norm_num_groups`` and every spatial size divisible by ``spatial_divisor``
            ``= 2 ** (len(channels) - 1)``.
        time_scale: ``t`` (or ``dt``) is multiplied by this before the UNet's time embedding.
        num_classes: enables class conditioning with labels in ``[0, num_classes)``; index
            ``num_classes`` is the learned *null* class used when ``class_labels=None``
            (classifier-free guidance).
        class_conditioning: ``"embedding"`` (UNet ``num_class_embeds``, added to the time
            embedding) or ``"cross_attention"`` (one-hot context of size ``num_classes + 1``;
            needs at least one attention level).
        mask_channels: channels of an optional mask (B, mask_channels, *spatial) at the
            image resolution; ``mask=None`` means the null mask (zeros).
        mask_conditioning: ``"controlnet"`` (``monai.networks.nets.ControlNet`` residuals),
            ``"concat"`` (mask concatenated to the input channels) or ``"both"``.
        condition_channels: channels of a required extra image input (e.g. the degraded image
            of a restoration flow) concatenated to ``x``.
        controlnet_scale: ``conditioning_scale`` of the ControlNet residuals.
        flow_map: take a second time ``target_time`` (B,); the interval ``target_time - t`` is
            embedded (scaled by ``time_scale``) and added to the time embedding.
        mid_attention: keep the self-attention block that ``DiffusionModelUNet`` always puts in its
            middle. Its cost grows with the square of the pixel count of the lowest level (at 512^2
            with 3 levels it attends over 128^2 tokens, ~95% of the pass); ``False`` removes it, so a
            pass costs time proportional to the pixels. Not available with cross-attention classes.
        fused_attention: compute every self-attention block with ``torch.nn.functional.scaled_dot_product_attention``
            (MONAI's ``use_flash_attention``): the same result up to rounding, without the (tokens x tokens)
            attention matrix in memory, and faster (1.3x for a 3D 64^3 window on a CPU). A speed option:
            it adds no weights and changes no ``state_dict`` key, so it can be switched on a trained network
            (``net.set_fused_attention(False)``).
        channels_last: start in channels-last memory format (:meth:`to_channels_last`); a speed option
            that changes no weight or key.
        unet_kwargs: any other ``DiffusionModelUNet`` argument (e.g. ``resblock_updown``).

    Speed options that change no weight: :meth:`to_channels_last` (channels-last memory format for
    weights and inputs; measured in ``benchmarks/ct_slice_speed.py``), ``fused_attention`` and AMP
    (run the network under ``torch.autocast``: :func:`monai_flow.networks.precision.autocast`; the
    time embedding stays float32 and the output has the input's dtype).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int | None = None,
        channels: Sequence[int] = (32, 64, 64, 64),
        attention_levels: Sequence[bool] = (False, False, True, True),
        num_res_blocks: Sequence[int] | int = 2,
        norm_num_groups: int = 32,
        num_head_channels: Sequence[int] | int = 8,
        time_scale: float = 1000.0,
        num_classes: int | None = None,
        class_conditioning: str = "embedding",
        mask_channels: int = 0,
        mask_conditioning: str = "controlnet",
        condition_channels: int = 0,
        controlnet_scale: float = 1.0,
        flow_map: bool = False,
        mid_attention: bool = True,
        fused_attention: bool = True,
        channels_last: bool = False,
        **unet_kwargs,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        channels = tuple(int(c) for c in channels)
        bad = [c for c in channels if c % norm_num_groups]
        if bad:
            raise ValueError(
                f"every entry of channels must be a multiple of norm_num_groups={norm_num_groups}, "
                f"got channels={channels} (offending: {bad})."
            )
        if len(attention_levels) != len(channels):
            raise ValueError(
                f"attention_levels must have len(channels)={len(channels)} entries, got {len(attention_levels)}."
            )
        if class_conditioning not in _CLASS_MODES:
            raise ValueError(f"class_conditioning must be one of {_CLASS_MODES}, got {class_conditioning!r}.")
        if mask_conditioning not in _MASK_MODES:
            raise ValueError(f"mask_conditioning must be one of {_MASK_MODES}, got {mask_conditioning!r}.")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}.")
        if mask_channels < 0 or condition_channels < 0:
            raise ValueError(
                f"mask_channels and condition_channels must be >= 0, got {mask_channels} and {condition_channels}."
            )
        if "use_flash_attention" in unet_kwargs:  # MONAI's name for fused_attention
            fused_attention = bool(unet_kwargs["use_flash_attention"])
        cross = num_classes is not None and class_conditioning == "cross_attention"
        if cross and not mid_attention:
            raise ValueError("mid_attention=False is not available with class_conditioning='cross_attention'.")
        if cross and not any(attention_levels):
            raise ValueError(
                "class_conditioning='cross_attention' needs at least one True entry in attention_levels, "
                f"got {tuple(attention_levels)}."
            )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.time_scale = float(time_scale)
        self.num_classes = num_classes
        self.class_conditioning = class_conditioning
        self.mask_channels = mask_channels
        self.mask_conditioning = mask_conditioning if mask_channels else None
        self.condition_channels = condition_channels
        self.controlnet_scale = controlnet_scale
        self.spatial_divisor = 2 ** (len(channels) - 1)
        self.flow_map = bool(flow_map)
        label_embeds = num_classes + 1 if num_classes is not None and not cross else None

        concat_mask = self.mask_conditioning in ("concat", "both")
        unet_in = in_channels + condition_channels + (mask_channels if concat_mask else 0)
        common = dict(
            spatial_dims=spatial_dims,
            in_channels=unet_in,
            num_res_blocks=ensure_tuple_rep(num_res_blocks, len(channels)),
            channels=channels,
            attention_levels=tuple(attention_levels),
            norm_num_groups=norm_num_groups,
            num_head_channels=num_head_channels,
            with_conditioning=cross,
            cross_attention_dim=num_classes + 1 if cross else None,
            # flow maps use the class slot for the interval embedding (and the labels, if any)
            num_class_embeds=label_embeds or (1 if self.flow_map else None),
            **unet_kwargs,
        )
        self.unet = DiffusionModelUNet(out_channels=self.out_channels, **common)
        self.mid_attention = bool(mid_attention)
        if not self.mid_attention:
            self.unet.middle_block.attention = nn.Identity()
        if self.flow_map:
            self.unet.class_embedding = _LabelAndInterval(label_embeds, channels[0], self.time_scale)
        self.unet.time_embed = Float32Module(*self.unet.time_embed)  # same keys: time_embed.0, .2
        self.controlnet: ControlNet | None = None
        if self.mask_conditioning in ("controlnet", "both"):
            self.controlnet = ControlNet(
                conditioning_embedding_in_channels=mask_channels,
                conditioning_embedding_num_channels=(channels[0],),  # mask at image resolution
                **{k: v for k, v in common.items() if k != "dropout_cattn"},  # UNet-only argument
            )
            if self.flow_map:
                self.controlnet.class_embedding = _LabelAndInterval(label_embeds, channels[0], self.time_scale)
            if not self.mid_attention:
                self.controlnet.middle_block.attention = nn.Identity()
            self.controlnet.time_embed = Float32Module(*self.controlnet.time_embed)
            self.copy_unet_weights_to_controlnet()
        self.memory_format = torch.contiguous_format
        self.set_fused_attention(fused_attention)
        if channels_last:
            self.to_channels_last()

    def set_fused_attention(self, enabled: bool = True) -> VelocityUNet:
        """Compute self-attention with ``scaled_dot_product_attention`` (True) or MONAI's explicit
        attention matrix (False); no weight changes. Returns ``self``."""
        self.fused_attention = bool(enabled)
        for m in self.modules():
            if isinstance(m, SABlock):
                m.use_flash_attention = self.fused_attention
        return self

    def to_channels_last(self, enabled: bool = True) -> VelocityUNet:
        """Keep weights, and convert inputs, in channels-last memory format (``torch.channels_last`` in
        2D, ``channels_last_3d`` in 3D), or back to the standard format with ``enabled=False``.

        Only the memory layout changes (no weight, no key, the same result up to rounding). On CPUs
        it speeds 2D convolutions up (512^2 slices: 1.5x in float32, more with bf16 AMP,
        ``benchmarks/ct_slice_speed.py``) and 3D windows of 48^3 (1.4x in float32; none at 64^3 and
        above). Returns ``self``.
        """
        cl = torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d
        self.memory_format = cl if enabled else torch.contiguous_format
        return self.to(memory_format=self.memory_format)

    @property
    def null_class(self) -> int | None:
        """Index of the null (unconditional) class, ``num_classes``; None without class conditioning."""
        return self.num_classes

    def copy_unet_weights_to_controlnet(self) -> None:
        """Initialise the ControlNet encoder from the UNet (standard ControlNet practice; its
        zero-initialised output convolutions keep the residuals zero until trained)."""
        if self.controlnet is not None:
            self.controlnet.load_state_dict(self.unet.state_dict(), strict=False)

    def _timesteps(self, t: torch.Tensor | float, batch: int, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if not torch.is_floating_point(t):
            t = t.float()
        if t.ndim == 0 or t.shape == (1,):
            t = t.reshape(1).expand(batch)
        elif t.shape != (batch,):
            raise ValueError(
                f"t must be a float, a 0-d tensor or a tensor of shape (1,) or (B,)=({batch},), got {tuple(t.shape)}."
            )
        return t.to(torch.promote_types(t.dtype, torch.float32)) * self.time_scale

    def _check_x(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (B, {self.in_channels}, {', '.join(['S'] * self.spatial_dims)}), "
                f"got {tuple(x.shape)}."
            )
        d = self.spatial_divisor
        bad = [s for s in x.shape[2:] if s % d]
        if bad:
            raise ValueError(
                f"every spatial size of x must be divisible by spatial_divisor={d} (= 2**(len(channels)-1)), "
                f"got spatial shape {tuple(x.shape[2:])}; pad or crop, or pick a roi_size divisible by {d}."
            )

    def _labels(self, class_labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
        if self.num_classes is None:
            if class_labels is not None:
                raise ValueError("class_labels given but the network was built with num_classes=None.")
            return None
        if class_labels is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        labels = torch.as_tensor(class_labels, device=device)
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"class_labels must be an integer tensor, got dtype {labels.dtype}.")
        if labels.shape != (batch,):
            raise ValueError(f"class_labels must have shape (B,)=({batch},), got {tuple(labels.shape)}.")
        if labels.numel() and (labels.min() < 0 or labels.max() > self.num_classes):
            raise ValueError(
                f"class_labels must lie in [0, {self.num_classes - 1}] (or {self.num_classes} for the null class), "
                f"got min {int(labels.min())}, max {int(labels.max())}."
            )
        return labels.long()

    def _extra(self, name: str, value: torch.Tensor | None, nch: int, x: torch.Tensor) -> torch.Tensor | None:
        if nch == 0:
            if value is not None:
                raise ValueError(f"{name} given but the network was built with {name}_channels=0.")
            return None
        if value is None:
            if name == "condition":
                raise ValueError(f"condition is required: the network was built with condition_channels={nch}.")
            return x.new_zeros((x.shape[0], nch, *x.shape[2:]))  # null mask
        expected = (x.shape[0], nch, *x.shape[2:])
        if tuple(value.shape) != expected:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}.")
        return value.to(dtype=x.dtype)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        target_time: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Args:
            x: state (B, in_channels, *spatial).
            t: time in [0, 1] (or RelativeFlow step ``dt``): float, 0-d, (1,) or (B,) tensor.
            target_time: flow maps only: the end time of the jump, same forms as ``t``.
            class_labels: (B,) integers in [0, num_classes]; None -> null class.
            mask: (B, mask_channels, *spatial); None -> null (zero) mask.
            condition: (B, condition_channels, *spatial), required iff condition_channels > 0.

        Returns:
            velocity (B, out_channels, *spatial).
        """
        self._check_x(x)
        batch = x.shape[0]
        in_dtype = x.dtype
        if self.memory_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=self.memory_format)
        timesteps = self._timesteps(t, batch, x)
        labels = self._labels(class_labels, batch, x.device)
        mask = self._extra("mask", mask, self.mask_channels, x)
        condition = self._extra("condition", condition, self.condition_channels, x)
        parts = [x] + ([condition] if condition is not None else [])
        if self.mask_conditioning in ("concat", "both"):
            parts.append(mask)
        h = torch.cat(parts, dim=1) if len(parts) > 1 else x
        kwargs: dict = {}
        if labels is not None:
            if self.class_conditioning == "cross_attention":
                kwargs["context"] = F.one_hot(labels, self.num_classes + 1).to(x.dtype)[:, None]
            else:
                kwargs["class_labels"] = labels
        if self.flow_map != (target_time is not None):
            raise ValueError(
                "target_time is required by flow-map networks (flow_map=True) and refused by velocity networks; "
                f"this network has flow_map={self.flow_map}."
            )
        if self.flow_map:
            interval = (self._timesteps(target_time, batch, x) - timesteps) / self.time_scale
            label_slot = kwargs.pop("class_labels", torch.zeros(batch, device=x.device)).to(interval.dtype)
            kwargs["class_labels"] = torch.stack([label_slot, interval], dim=1)
        if self.controlnet is not None:
            down, mid = self.controlnet(
                h, timesteps, controlnet_cond=mask, conditioning_scale=self.controlnet_scale, **kwargs
            )
            kwargs.update(down_block_additional_residuals=down, mid_block_additional_residual=mid)
        out = self.unet(h, timesteps, **kwargs)
        if self.memory_format is not torch.contiguous_format:
            out = out.contiguous()
        return out if out.dtype == in_dtype else out.to(in_dtype)  # autocast: back to the state's dtype
