"""MLflow pyfunc wrapper around a Hugging Face model directory (models-from-code).

The registered artifact keeps the HF directory intact under `artifacts/hf_model/`, so vLLM and
transformers load it as is; `mlflow.pyfunc.load_model(uri).predict(prompts)` generates text.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel

HF_ARTIFACT = "hf_model"


class HFTextModel(PythonModel):
    def load_context(self, context):
        from components.modeling.io import load_for_inference

        self.model, self.tokenizer = load_for_inference(context.artifacts[HF_ARTIFACT])

    def predict(self, context, model_input, params=None):
        import torch

        if hasattr(model_input, "iloc"):  # a DataFrame: the first column holds the texts
            model_input = model_input.iloc[:, 0]
        prompts = list(model_input)
        if self.model.config.architectures[0].endswith("ForSequenceClassification"):
            # Reward model: one scalar score per input text.
            with torch.no_grad():
                return [
                    float(self.model(**self.tokenizer(p, return_tensors="pt")).logits[0, 0])
                    for p in prompts
                ]
        max_new_tokens = int((params or {}).get("max_new_tokens", 32))
        outputs = []
        for prompt in prompts:
            ids = self.tokenizer(prompt, return_tensors="pt")
            with torch.no_grad():
                gen = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
            outputs.append(
                self.tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            )
        return outputs


mlflow.models.set_model(HFTextModel())
