"""The adversarial intermediate-supervision distiller (KTAN, KSANC, Xu et al., Zhang et al.).

``train(student, teacher, splits, schedule, mode, device=..., seed=...)`` distils one student;
modes are named weight presets (`MODES`), each weight overridable with `parse_loss_weights`.
See docs/DISTILLER.md for what follows the papers and what is our choice.
"""

from nas_kd.distill.attention_fit import fit_teacher_attention
from nas_kd.distill.cache import TeacherCache
from nas_kd.distill.modes import MODES, LossWeights, Mode, get_mode, parse_loss_weights
from nas_kd.distill.trainer import check_teacher, train

__all__ = ["train", "check_teacher", "TeacherCache", "fit_teacher_attention", "Mode", "LossWeights", "MODES", "get_mode", "parse_loss_weights"]
