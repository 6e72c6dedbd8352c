"""Mutation check for the distiller's tests: apply one deliberate breakage at a time to a copy of
the repository and run the distiller tests; every breakage must make at least one test fail.

    python scripts/break_distiller.py [INDEX ...]

Each row is (name, file, exact text, replacement). A row whose text no longer occurs once says
PATTERN NOT FOUND: update it with the code. Takes ~30 s per breakage on a 2-core CPU.
"""

import os
import shutil
import subprocess
import sys
import tempfile

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DST = os.path.join(tempfile.gettempdir(), "nas-kd-break-distiller")
BREAKS = [
 ("kd detached", "nas_kd/distill/objective.py", "losses.kd_loss(student_logits, teacher.logits", "losses.kd_loss(student_logits.detach(), teacher.logits"),
 ("l1 detached", "nas_kd/distill/objective.py", "losses.logit_l1(student_logits, teacher.logits)", "losses.logit_l1(student_logits.detach(), teacher.logits)"),
 ("l2 on the wrong tensor (teacher vs teacher)", "nas_kd/distill/objective.py", "losses.logit_l2(student_logits, teacher.logits)", "losses.logit_l2(teacher.logits + 0 * student_logits, teacher.logits)"),
 ("feat detached", "nas_kd/distill/objective.py", "losses.feature_mse(adapted.maps, teacher.maps)", "losses.feature_mse([m.detach() for m in adapted.maps], teacher.maps)"),
 ("feat: deepest pair only (wrong stages)", "nas_kd/distill/objective.py", "losses.feature_mse(adapted.maps, teacher.maps)", "losses.feature_mse(adapted.maps[-1:], teacher.maps[-1:])"),
 ("desc detached", "nas_kd/distill/objective.py", "self.attention.squeeze(adapted.maps)", "self.attention.squeeze([m.detach() for m in adapted.maps])"),
 ("recon detached", "nas_kd/distill/objective.py", "torch.relu(adapted.maps[-1][:n])", "torch.relu(adapted.maps[-1][:n].detach())"),
 ("recon against the flipped image", "nas_kd/distill/objective.py", "images[:n])", "images[:n].flip(3))"),
 ("adv_feat detached", "nas_kd/distill/objective.py", "losses.generator_bce(self.feature_disc(feature_view(adapted.coarse)))", "losses.generator_bce(self.feature_disc(feature_view(adapted.coarse.detach())))"),
 ("adv_feat on the upsampled map", "nas_kd/distill/objective.py", "losses.generator_bce(self.feature_disc(feature_view(adapted.coarse)))", "losses.generator_bce(self.feature_disc(feature_view(adapted.maps[-1])))"),
 ("adv_logit detached", "nas_kd/distill/objective.py", "            scores, classes = self._judge_logits(teacher.logits, student_logits)\n            parts", "            scores, classes = self._judge_logits(teacher.logits, student_logits.detach())\n            parts"),
 ("student's GAN target swapped (wants 'fake')", "nas_kd/distill/losses.py", "return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))", "return F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))"),
 ("feature discriminator real/fake swapped", "nas_kd/distill/objective.py", "total = total + losses.discriminator_bce(real, fake)", "total = total + losses.discriminator_bce(fake, real)"),
 ("logit discriminator real/fake swapped", "nas_kd/distill/objective.py", "losses.discriminator_bce(scores[:n], scores[n:])", "losses.discriminator_bce(scores[n:], scores[:n])"),
 ("student loss = CE only", "nas_kd/distill/objective.py", "            total = total + factor * value\n", "            total = total + (factor * value if term == 'ce' else 0 * value)\n"),
 ("feat zero-weighted in the sum", "nas_kd/distill/objective.py", "            total = total + factor * value\n", "            total = total + (0 if term == 'feat' else factor) * value\n"),
 ("class half of adv_logit zero-weighted", "nas_kd/distill/objective.py", '"adv_logit_class": "adv_logit",', '"adv_logit_class": "ce", "__x": "adv_logit",'),
 ("preset weight of desc in full set to 0", "nas_kd/distill/modes.py", "LossWeights(ce=0.5, kd=0.5, feat=0.1, desc=0.1, adv_logit=0.1, adv_feat=0.1)", "LossWeights(ce=0.5, kd=0.5, feat=0.1, desc=0.0, adv_logit=0.1, adv_feat=0.1)"),
 ("gates ignored (always open)", "nas_kd/distill/discriminators.py", "return ((self.accuracy - self.chance - GATE_MARGIN) / GATE_RAMP).clamp(0.0, 1.0)", "return torch.ones_like(self.accuracy)"),
 ("gates never open", "nas_kd/distill/discriminators.py", "return ((self.accuracy - self.chance - GATE_MARGIN) / GATE_RAMP).clamp(0.0, 1.0)", "return torch.zeros_like(self.accuracy)"),
 ("gates never fed", "nas_kd/distill/step.py", "        self.objective.observe(accuracy)\n", ""),
 ("student optimizer.step() deleted", "nas_kd/distill/step.py", "        self.optimizer.step()\n", ""),
 ("discriminator optimizer step deleted", "nas_kd/distill/step.py", "        self.disc_optimizer.step()\n", ""),
 ("discriminators not frozen in the student's step", "nas_kd/distill/step.py", "        with frozen(self.objective.discriminators()), autocast(y.device):", "        with autocast(y.device):"),
 ("feature view: raw maps (no median centring, no ReLU)", "nas_kd/distill/discriminators.py", "    x = torch.relu(x - median.view(1, -1, 1, 1))", "    x = x"),
 ("logit discriminator standardised with student logits too", "nas_kd/distill/objective.py", "self.logit_disc.standardise.observe(teacher.logits)", "self.logit_disc.standardise.observe(torch.cat([teacher.logits, student_logits]))"),
 ("logit discriminator lr back to 1e-3", "nas_kd/distill/modes.py", "    logit_disc_lr: float = 1e-2\n", "    logit_disc_lr: float = 1e-3\n"),
 ("teacher attention trained with the student", "nas_kd/distill/objective.py", ".subset(self.teacher_stages).requires_grad_(False)", ".subset(self.teacher_stages).requires_grad_(True)"),
 ("teacher attention not fitted (returned as initialised)", "nas_kd/distill/attention_fit.py", "            optimizer.step()\n", ""),
 ("cache ignores the flip (wrong view)", "nas_kd/distill/cache.py", "rows = index + flipped.long() * self.num_examples if self.views == 2 else index", "rows = index"),
 ("cache stores the identity view twice", "nas_kd/distill/cache.py", "x = loader.view(index, flip=view == 1)", "x = loader.view(index, flip=False)"),
 ("cache: wrong stage's maps", "nas_kd/distill/cache.py", "maps = [self.maps[j][rows].float() for j in map_stages]", "maps = [self.maps[j][rows].float() for j in sorted(map_stages, reverse=True)]"),
 ("loader reports no flips", "nas_kd/data.py", "            yield Batch(self.normalise(xb), yb, idx, flipped)", "            yield Batch(self.normalise(xb), yb, idx, torch.zeros_like(flipped))"),
 ("train ignores the caller's cache (rebuilds)", "nas_kd/distill/trainer.py", "        return teacher_cache, teacher_cache.attention_state\n", "        teacher_cache = None\n"),
 ("adversarial warm-up ignored", "nas_kd/distill/objective.py", "        if adversarial and w.adv_feat:", "        if w.adv_feat:"),
]
TESTS = [
    "tests/test_distill_adapters.py",
    "tests/test_distill_losses.py",
    "tests/test_distill_modes.py",
    "tests/test_distill_step.py",
    "tests/test_distill_terms.py",
    "tests/test_distill_cache.py",
    "tests/test_distill_discriminators.py",
    "tests/test_distill_trainer.py",
    "tests/test_cli_distill.py",
    "tests/test_data.py",
]
only = sys.argv[1:] and [int(i) for i in sys.argv[1:]]
missed = 0
for i, (name, path, old, new) in enumerate(BREAKS):
    if only and i not in only:
        continue
    if os.path.exists(DST):
        shutil.rmtree(DST)
    shutil.copytree(SRC, DST, ignore=shutil.ignore_patterns(".git", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"))
    f = os.path.join(DST, path)
    text = open(f).read()
    if text.count(old) != 1:
        print(f"[{i}] {name}: PATTERN NOT FOUND ONCE ({text.count(old)})", flush=True)
        continue
    open(f, "w").write(text.replace(old, new))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=DST, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": DST})
    failed = [line.split(" ")[1] for line in r.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    status = "CAUGHT" if failed else "MISSED"
    missed += not failed
    print(f"[{i}] {name}: {status} ({len(failed)} failing)", flush=True)
    for test in failed[:6]:
        print("      ", test, flush=True)
shutil.rmtree(DST, ignore_errors=True)
sys.exit(1 if missed else 0)
