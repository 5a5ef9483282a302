"""NTP: plain next-token prediction, the baseline (objectives.md §0), with the optional
forking-token mask (§4): with rho < 1 the loss covers only the top-rho entropy positions."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lab.entropy import entropy_stats, forking_mask, masked_mean, nll_and_entropy
from lab.flops import train_flops
from lab.objectives.base import NoParams, Objective, StepOutput
from lab.records import sequence_records


@dataclass
class NTPParams(NoParams):
    pass


class NTP(Objective):
    name = "ntp"
    Params = NTPParams
    description = "Plain next-token prediction: the baseline every objective is compared with."

    def step(self, batch: dict[str, torch.Tensor], *, record: int) -> StepOutput:
        ids, attn = batch["input_ids"], batch["attention_mask"]
        logits = self.model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        targets = ids[:, 1:]
        valid = attn[:, 1:].bool()
        nll, ent = nll_and_entropy(logits, targets)
        selected = forking_mask(ent, valid, self.cfg.rho)
        loss = masked_mean(nll, selected)
        metrics = {"nll": masked_mean(nll.detach(), valid).item(),
                   "selected_share": selected.float().sum().item() / max(valid.sum().item(), 1),
                   **entropy_stats(ent, valid)}
        out = StepOutput(loss=loss, metrics=metrics, tokens=int(attn.sum()),
                         flops=train_flops(self.desc, int(attn.sum()), ids.shape[1]))
        for s in range(min(record, ids.shape[0])):
            full = torch.cat([logits[s], logits[s, -1:]], 0)  # pad so logits[t] predicts t+1
            out.token_records += sequence_records(self.tokenizer, ids[s], full, sample=s)
        return out
