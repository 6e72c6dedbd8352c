"""Mode presets and the loss-weight override grammar."""

import pytest

from nas_kd.distill import MODES, get_mode, parse_loss_weights
from nas_kd.errors import UserError


def test_every_mode_has_a_summary_and_only_ce_skips_the_teacher():
    assert set(MODES) == {"ce", "kd", "ktan", "ksanc", "xu", "zhang", "full"}
    for name, mode in MODES.items():
        assert mode.summary and mode.name == name
        assert mode.uses_teacher == (name != "ce")
    assert MODES["zhang"].needs_reconstruction and not MODES["full"].needs_reconstruction
    assert MODES["xu"].weights.active() == {"ce": 1.0, "l1": 1.0, "adv_logit": 1.0}
    full = MODES["full"].weights.active()
    assert {"kd", "feat", "desc", "adv_logit", "adv_feat"} <= set(full)


def test_parse_and_override():
    changes = parse_loss_weights(" kd=0.25, feat=0 ,temperature=2,adv_warmup=0.5")
    assert changes == {"kd": 0.25, "feat": 0.0, "temperature": 2.0, "adv_warmup": 0.5}
    mode = get_mode("full").override(changes)
    assert mode.weights.kd == 0.25 and mode.weights.feat == 0 and mode.temperature == 2.0
    assert mode.weights.desc == MODES["full"].weights.desc and MODES["full"].weights.kd == 0.5
    assert parse_loss_weights("") == {} and parse_loss_weights(None) == {}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("kd=1,bogus=2", "unknown key 'bogus'; valid keys: ce, kd"),
        ("kd", "is not key=value"),
        ("kd=abc", "'abc' for 'kd' is not a number"),
        ("kd=-1", "'kd' must be finite and >= 0"),
        ("kd=nan", "'kd' must be finite and >= 0"),
        ("temperature=0", "'temperature' must be positive"),
        ("disc_lr=0", "'disc_lr' must be positive"),
        ("logit_disc_lr=0", "'logit_disc_lr' must be positive"),
        ("adv_warmup=1", "'adv_warmup' must be in [0, 1)"),
        ("kd=1,kd=2", "'kd' is given twice"),
        ("map_samples=0", "'map_samples' must be a whole number >= 1"),
        ("map_samples=1.5", "'map_samples' must be a whole number >= 1"),
    ],
)
def test_bad_weights_are_one_line_user_errors(text, fragment):
    with pytest.raises(UserError) as e:
        parse_loss_weights(text)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_unknown_mode_lists_the_modes():
    with pytest.raises(UserError, match="unknown distillation mode 'nope': choose one of ce, kd, ktan, ksanc, xu, zhang, full"):
        get_mode("nope")


def test_a_mode_spec_is_that_mode_with_overrides():
    variant = get_mode("full+adv_feat=0+temperature=2")
    assert variant == MODES["full"].override({"adv_feat": 0.0, "temperature": 2.0})
    assert variant.weights.adv_feat == 0 and variant.weights.feat == MODES["full"].weights.feat
    assert get_mode("kd") is MODES["kd"]
    whole_batch = get_mode("full+map_samples=128").map_samples
    assert whole_batch == 128 and isinstance(whole_batch, int)
    with pytest.raises(UserError, match="unknown distillation mode 'nope'"):
        get_mode("nope+kd=1")
    with pytest.raises(UserError, match="unknown key 'bogus'"):
        get_mode("full+bogus=1")


@pytest.mark.parametrize("term", ["kd", "l1", "l2", "feat", "desc", "adv_logit", "adv_feat", "recon"])
def test_every_term_but_ce_reads_the_teacher(term):
    """A mode left with one teacher term (``xu+adv_logit=0`` keeps ce and l1) still loads the teacher."""
    assert get_mode(f"ce+{term}=0.5").uses_teacher


def test_descriptors_alone_need_no_teacher_maps():
    """ksanc's desc reads the teacher's squeezed descriptors, not its maps: the cache and the live
    pass keep no maps for it (a few hundred MB on the standard preset)."""
    ksanc = get_mode("ksanc")
    assert ksanc.uses_maps and not ksanc.uses_teacher_maps
    assert all(get_mode(f"ce+{t}=0.5").uses_teacher_maps for t in ("feat", "adv_feat", "recon"))


def test_every_mode_with_a_feature_discriminator_keeps_it_gentle_with_r1():
    """docs/DISTILLER.md: without R1 the feature discriminator separated the maps outright and its
    steep boundary cost `full` 1.9 validation points."""
    from nas_kd.distill.modes import FEAT_R1

    with_feature_disc = [m for m in MODES.values() if m.weights.adv_feat]
    assert {m.name for m in with_feature_disc} == {"ktan", "zhang", "full"}
    assert all(m.feat_r1 == FEAT_R1 > 0 for m in with_feature_disc)


def test_a_stored_mode_comes_back_exactly_and_refuses_knobs_it_does_not_know():
    import json

    from nas_kd.distill.modes import Mode

    changed = get_mode("full+temperature=2,feat_r1=1,adv_warmup=0.3,map_samples=8,disc_lr=0.002")
    for mode in (*MODES.values(), changed):
        again = Mode.from_dict(json.loads(json.dumps(mode.to_dict())))
        assert again == mode and again.signature() == mode.signature()
    stored = changed.to_dict()
    del stored["logit_disc_lr"]  # stored before the knob existed: today's default
    assert Mode.from_dict(stored).logit_disc_lr == MODES["full"].logit_disc_lr
    with pytest.raises(UserError, match=r"knobs this nas-kd does not know \(gamma\)"):
        Mode.from_dict({**changed.to_dict(), "gamma": 1.0})
    with pytest.raises(UserError, match=r"does not know \(focal\)"):
        Mode.from_dict({**changed.to_dict(), "weights": {**changed.to_dict()["weights"], "focal": 1.0}})


@pytest.mark.parametrize("change", ["temperature=2", "disc_lr=0.01", "logit_disc_lr=0.1", "disc_penalty=0.1", "feat_r1=1", "adv_warmup=0.5", "map_samples=16", "kd=0.25"])
def test_the_signature_tells_apart_every_knob_and_overrides_restore_it(change):
    """What a study's workers compare: a mode differing in any one knob must not pass for the
    same (`describe` names only the weights and T), and `changes_from` must give the overrides
    that rebuild it from its base."""
    base = MODES["full"]
    other = get_mode(f"full+{change}")
    assert other.signature() != base.signature()
    assert other.changes_from(base) == parse_loss_weights(change)
    assert base.override(other.changes_from(base)) == other and base.changes_from(base) == {}


def test_a_mode_no_override_can_rebuild_says_so():
    import dataclasses

    last = dataclasses.replace(MODES["full"], stages="last")
    assert "stages=last" in last.signature() and last.signature() != MODES["full"].signature()
    with pytest.raises(ValueError, match="is not full with overrides"):
        last.changes_from(MODES["full"])
    with pytest.raises(ValueError):
        MODES["full"].changes_from(get_mode("full+map_samples=8"))  # no override means "every image"
