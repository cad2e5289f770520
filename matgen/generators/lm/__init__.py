"""Language-model generators: crystals as text (Crystal-text-LLM's "ctl" form, or CIF) and
molecules as SELFIES / SMILES, sampled from a Hugging Face causal LM.

One training example is ``<bos> PROMPT <gen> BODY <eos>``; the prompt holds optional conditions
(composition, space group, properties) or an infilling body. Modules (imported by full path):

- ``crystal_text``, ``crystal_cif``, ``molecule_text``: bodies to and from structures/molecules;
- ``prompts``: prompts and training examples; ``tokenizer``: the atomic-token tokenizers;
- ``constrained``: logits processors that keep sampled bodies well-formed;
- ``model``: :class:`~matgen.generators.lm.model.LMConfig` presets and the network;
- ``lora``: low-rank adapters on any local pretrained causal LM;
- ``checkpoint``: model directories (safetensors + tokenizer + ``matgen.json`` card), the
  shipped ones in ``models/``;
- ``generator``: ``TextCrystalGenerator`` / ``TextMoleculeGenerator``.

Nothing here imports Lightning (training lives in ``matgen.training.lm_*``).
"""
