"""Settings of ``cryohydra reconstruct``, with their defaults and where they come from.

The paper's settings (Shekarforoush et al., NeurIPS 2024, "semi-amortized pose inference") are
the starting points: M = 7 heads on synthetic data (15 on real data), batch 64 (or 32),
encoder learning rate 1e-4, volume learning rate 0.05 (0.02 after the switch), 5 pose steps
then 1 volume step per batch after the switch with a pose Adam learning rate of 0.05, 20 or
30 epochs, a VGG16-style encoder. Where cryohydra's defaults differ, the reason (a benchmark
measurement) is given next to the field and in ``docs/reconstruct.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from cryohydra.geometry.symmetry import point_group
from cryohydra.inference.modes import MODES, Mode, get_mode

__all__ = ["MODES", "ReconstructConfig"]


@dataclass(frozen=True)
class ReconstructConfig:
    """All the knobs of one ab-initio run.

    Attributes:
        mode: ``semi-amortized`` (multi-head encoder, then per-particle auto-decoding),
            ``amortized`` (the encoder to the end) or ``cryoai`` (one head, the two-pose
            symmetrised loss, to the end).
        epochs: passes over the particles, both stages together.
        switch: ``"auto"`` or the epoch (1-based) after which auto-decoding starts.
        n_heads: ``M``, candidate poses per image (``cryoai`` uses 1).
        batch_size: images per step.
        backbone: ``light`` (CPU) or ``vgg16`` (the paper's).
        encoder_lr, volume_lr, volume_lr_after_switch: Adam learning rates.
        pose_lr_rad, pose_lr_shift_a: per-particle Adam rates of the rotation (radians) and
            shift (Å) perturbations.
        pose_steps: pose steps before each volume step in the auto-decoding stage.
        predict_shifts: the heads predict shifts and auto-decoding refines them.
        max_shift_a: bound of the predicted shifts (default 10 % of the box).
        min_amortized_epochs, max_amortized_epochs: bounds of the automatic switch (the
            latter defaults to half the epochs).
        switch_head_change, switch_pose_change_deg: the automatic switch happens when, from
            one epoch to the next, at most this fraction of images change winning head and the
            median change of the best pose is at most this angle.
        working_box: image side used for training (``--downsample``); default as stored.
        encoder_box: the encoder sees the images Fourier-cropped to this side (px; None: the
            working box). The encoder only has to find coarse poses; a small input makes the
            amortized stage several times cheaper.
        start_resolution_a: highest resolution (Å) compared in the loss while poses are
            global (the amortized stage); None: ``max_resolution_a``.
        march_epochs: after the switch the loss's resolution limit rises linearly in
            frequency from ``start_resolution_a`` to ``max_resolution_a`` over this many
            epochs (frequency marching). Runs without a switch (``amortized``, ``cryoai``)
            march from ``latest_switch`` on, so all modes share one resolution schedule.
        max_resolution_a: highest resolution compared in the loss; default Nyquist.
        search_rounds: at the switch, up to this many rounds of global pose search on a grid
            of SO(3) (every image against every grid rotation, at ``start_resolution_a``)
            alternating with a known-pose reconstruction of the map, from the encoder's poses
            and map (0: the paper's switch, straight from the best heads). The encoder alone
            leaves an elongated, pseudo-symmetric molecule (6UO9) tens of degrees off; a few
            rounds bring it to the grid's spacing, from where auto-decoding converges. From a
            poor map it takes longer: on the realistic HSP90 set (20,000 images, 20 % junk,
            with ``amplitude_scale``) the search from the same encoder's map settled after 18
            rounds, with the molecules' mean error 27.0 degrees against 46.5 after 10 rounds
            (66.8 % within 15 degrees against 58.7 %); so up to 30 (about 8 s a round there).
        search_nside: HEALPix order of the search grid (``12 n^2`` viewing directions times
            ``6 n`` in-plane angles, spaced about ``58.6 / n`` degrees; 4: 4,608 rotations).
        search_converged: the search stops once at most this fraction of images move by more
            than half the grid's spacing in a round.
        search_coarse_resolution_a: the search first runs (up to ``search_rounds``) at this
            coarser resolution (Å), then at ``start_resolution_a`` from where it ended; None:
            at ``start_resolution_a`` only.
        search_candidates: every round of the search also tries each image's ``M`` encoder
            candidates (and its pose of the previous round) beside the grid. Off by default:
            on the demo's set, from an encoder whose best heads were 102 degrees off, it
            moved the median after the search from 34.7 to 30.7 degrees but the fraction
            within 10 degrees from 0.24 to 0.21, at three times the search's cost.
        search_refine: every round of the search refines each image's best pose locally
            (rotation steps of a half and a quarter of the grid's spacing, shift steps of one
            and half a pixel) before the map is rebuilt. Off by default: from the same start
            (candidates on too) the search settled in 6 rounds on a map that explains the
            images better (mean error -1167 against -1045) but on a wrong solution (median
            127 degrees): refined poses and the map rebuilt from them lock each other in.
        symmetry_check: after each auto-decoding epoch at the final resolution, find the
            map's strongest self-superposition (a symmetry or pseudo-symmetry, e.g. two
            homologous subunits) and move each particle to the mate pose when that explains
            its image better. Low resolution cannot tell pseudo-symmetric mates apart, so the
            amortized stage leaves particles split between them.
        symmetry_check_min_correlation: the check acts only when the map superposes on itself
            at least this well (masked correlation). Default 0: a particle moves only when
            the mate pose fits its image better, which is safe whatever the map; the
            self-correlation of a map whose particles are split between mates can be low.
        starts: independent amortized starts (seeds ``seed``, ``seed + 1``, ...), each trained
            to the end of its first auto-decoding epoch; the run continues from the one whose
            loss is lowest there (the one that explains the images best, as cryoSPARC keeps the
            best of several initial models). 1: a single start. On the demo's set (6UO9,
            6,000 particles) one seed in three ends 132 degrees off; its loss after the first
            auto-decoding epoch was 4139 against 4023-4043 for the runs that succeeded
            (``docs/reconstruct.md``). Each start costs the amortized stage and the search again.
        symmetry: point group imposed (C<n>, D<n>, T, O, I, I1-I4 in RELION's orientation)
            from the switch on: its axes are found on the map of the switch's (C1) pose
            search, map and poses are turned onto RELION's axes, and from then the volume is
            kept symmetric and the maps are made by symmetry expansion (modes without a
            switch impose it from the start).
        invert_contrast: the stack has dark particles.
        encoder_bf16: run the encoder's CNN and heads under bfloat16 autocast (for a GPU's
            tensor cores); slicing, CTF, loss, pose table and volume stay float32.
        whiten: compare images and projections after whitening both by the noise spectrum
            estimated from the images' background (``docs/noise.md``): each frequency then
            counts by its signal-to-noise ratio, as it should under coloured noise.
        amplitude_scale: estimate each particle's amplitude (the CTF's ``scale``, RELION's
            ``rlnCtfScalefactor``) in closed form against the map at its pose, after the
            switch's search and after every auto-decoding epoch (mean 1, within
            ``SCALE_LIMITS``): real stacks vary in contrast from particle to particle (ice
            thickness). Needs a CTF. The scales are written to the STAR file and used by the
            final reconstruction. Off: the input's scales (1 when absent) are kept.
        mask_diameter_a: diameter (Å) of a soft spherical mask on the learned volume (as
            RELION's particle diameter; a raised-cosine edge of ``MASK_EDGE_PX`` working
            pixels beyond it, :func:`volume_mask`): density outside it cannot explain the
            images. None: no mask.
            The final map and half-maps (backprojections) are not masked; the model
            volume is.
        classes: ``K`` maps learned side by side (multi-class ab initio, ``docs/classes.md``).
            The encoder has ``K x M`` heads, head ``j`` proposing poses in class ``j // M``,
            and the winner-takes-all runs over the (head, class) pairs; at the switch every
            image is searched in every class's map, and each round of the search reassigns
            the classes and rebuilds each map from its members; in
            auto-decoding every particle keeps a pose in each class, refined by the pose
            steps, and its class is the one whose map explains its image best, reassigned at
            each visit (hard assignment). A class left with under ``MIN_CLASS_FRACTION`` of
            the particles is re-seeded from the worst-fitting half of the largest class.
            Costs about ``K`` times one class. With an imposed group each class's map is
            turned onto the group's axes on its own at the switch. Only in the
            semi-amortized mode; not yet with given initial poses or half-sets.
        seed: seeds the initial volume, the encoder and the batch order.
    """

    mode: str = "semi-amortized"
    epochs: int = 20
    switch: str | int = "auto"
    n_heads: int = 7
    batch_size: int = 64
    backbone: str = "light"
    encoder_lr: float = 1e-3
    volume_lr: float = 0.05
    volume_lr_after_switch: float = 0.02
    pose_lr_rad: float = 0.05
    pose_lr_shift_a: float = 0.2
    pose_steps: int = 5
    predict_shifts: bool = True
    max_shift_a: float | None = None
    min_amortized_epochs: int = 2
    max_amortized_epochs: int | None = None
    switch_head_change: float = 0.2
    switch_pose_change_deg: float = 5.0
    working_box: int | None = None
    encoder_box: int | None = 32
    start_resolution_a: float | None = 15.0
    march_epochs: int = 3
    max_resolution_a: float | None = None
    search_rounds: int = 30
    search_nside: int = 4
    search_converged: float = 0.02
    search_coarse_resolution_a: float | None = None
    search_candidates: bool = False
    search_refine: bool = False
    symmetry_check: bool = True
    symmetry_check_min_correlation: float = 0.0
    starts: int = 1
    symmetry: str = "C1"
    invert_contrast: bool = False
    whiten: bool = False
    encoder_bf16: bool = False
    mask_diameter_a: float | None = None
    amplitude_scale: bool = False
    classes: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        training = get_mode(self.mode)
        if self.switch != "auto" and (not isinstance(self.switch, int) or self.switch < 0):
            raise ValueError(f"switch must be 'auto' or an epoch number, got {self.switch!r}")
        for name in ("epochs", "batch_size", "n_heads", "pose_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.classes < 1:
            raise ValueError(f"classes must be >= 1, got {self.classes}")
        if self.classes > 1 and self.mode != "semi-amortized":
            raise ValueError(
                f"--classes {self.classes} works with the semi-amortized mode so far, not "
                f"{self.mode} (docs/classes.md)"
            )
        if self.starts < 1:
            raise ValueError(f"starts must be >= 1, got {self.starts}")
        if self.starts > 1 and not training.switches:
            raise ValueError(
                f"several starts are chosen between after the switch: {self.mode!r} has none "
                "(use --mode semi-amortized or --starts 1)"
            )
        if self.amplitude_scale and not training.switches:
            raise ValueError(
                "the amplitudes are estimated from the switch on: "
                f"{self.mode!r} has none (use --mode semi-amortized)"
            )
        if self.search_rounds < 0 or self.search_nside < 1:
            raise ValueError("search rounds must be >= 0 and the search nside >= 1")
        point_group(self.symmetry)  # a ValueError naming an unknown group
        if self.march_epochs < 0:
            raise ValueError(f"march_epochs must be >= 0, got {self.march_epochs}")
        if self.encoder_box is not None and (self.encoder_box < 8 or self.encoder_box % 2):
            raise ValueError(f"encoder box must be even and >= 8, got {self.encoder_box}")
        for name in (
            "start_resolution_a",
            "max_resolution_a",
            "search_coarse_resolution_a",
            "mask_diameter_a",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")

    @property
    def training_mode(self) -> Mode:
        """The mode (:mod:`cryohydra.inference.modes`) named by ``mode``."""
        return get_mode(self.mode)

    @property
    def heads(self) -> int:
        """Heads of the encoder."""
        return self.training_mode.n_heads(self.n_heads)

    @property
    def n_candidates(self) -> int:
        """Candidate poses per image (e.g. cryoAI's pose and its half-turned twin)."""
        return self.training_mode.n_candidates(self.n_heads)

    @property
    def amortized_only(self) -> bool:
        return not self.training_mode.switches

    @property
    def latest_switch(self) -> int:
        """The last epoch that may still be amortized under ``switch="auto"``."""
        if self.max_amortized_epochs is not None:
            return self.max_amortized_epochs
        return max(1, self.epochs // 2)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(values: dict) -> ReconstructConfig:
        known = {f.name for f in fields(ReconstructConfig)}
        return ReconstructConfig(**{k: v for k, v in values.items() if k in known})
