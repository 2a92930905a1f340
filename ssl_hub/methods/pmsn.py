"""PMSN: Prior Matching for Siamese Networks.

Assran, Balestriero, Duval, Bordes, Misra, Bojanowski, Vincent, Rabbat, Ballas, "The Hidden Uniform Cluster Prior in
Self-Supervised Learning", ICLR 2023 (arXiv:2210.07277), section 6. MSN's mean-entropy maximisation imposes a uniform
prior on the use of the prototypes, which suits class-balanced data; PMSN matches the mean prototype assignment to a
power-law prior instead, for long-tailed data. Everything else is MSN.
"""

from __future__ import annotations

from dataclasses import dataclass

from ssl_hub._validation import check_non_negative
from ssl_hub.losses.pmsn import PMSNLoss
from ssl_hub.methods.base import Paper
from ssl_hub.methods.msn import MSN, MSNConfig
from ssl_hub.registry import register_method

PAPER = Paper(
    title="The Hidden Uniform Cluster Prior in Self-Supervised Learning",
    authors="Mahmoud Assran, Randall Balestriero, Quentin Duval, Florian Bordes, Ishan Misra, Piotr Bojanowski, "
    "Pascal Vincent, Michael Rabbat, Nicolas Ballas",
    year=2023,
    url="https://arxiv.org/abs/2210.07277",
    bibtex="""@inproceedings{assran2023hidden,
  title={The Hidden Uniform Cluster Prior in Self-Supervised Learning},
  author={Assran, Mahmoud and Balestriero, Randall and Duval, Quentin and Bordes, Florian and Misra, Ishan and
    Bojanowski, Piotr and Vincent, Pascal and Rabbat, Michael and Ballas, Nicolas},
  booktitle={International Conference on Learning Representations (ICLR)},
  year={2023}
}""",
)


@dataclass
class PMSNConfig(MSNConfig):
    """PMSN's hyperparameters: :class:`MSNConfig`'s, with the regulariser matching a power-law prior.

    Args:
        power_law_exponent: Exponent of the prior ``tau_k ∝ k^(-power_law_exponent)`` (0.25, LightlySSL's default;
            0 gives MSN).
    """

    power_law_exponent: float = 0.25

    def validate(self) -> None:
        super().validate()
        check_non_negative("power_law_exponent", self.power_law_exponent, "PMSN")


@register_method
class PMSN(MSN):
    """PMSN around a timm ViT: :class:`MSN` with :class:`~ssl_hub.losses.PMSNLoss`; see :class:`PMSNConfig`.

    Views, networks, schedules and the published backbone (the target encoder) are MSN's.
    """

    name = "pmsn"
    display_name = "PMSN"
    config_class = PMSNConfig
    paper = PAPER
    config: PMSNConfig

    def build_criterion(self) -> PMSNLoss:
        cfg = self.config
        return PMSNLoss(
            temperature=cfg.temperature,
            sinkhorn_iterations=cfg.sinkhorn_iterations,
            regularization_weight=cfg.regularization_weight,
            power_law_exponent=cfg.power_law_exponent,
            gather_distributed=cfg.gather_distributed,
        )
