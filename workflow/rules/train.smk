rule train:
    input:
        index=cache_index,
        annotations="results/{ds}/annotations.json",
        backbone=tuned_backbone,
    output:
        model="results/{ds}/{method}/model.pt",
        log_csv="results/{ds}/{method}/train_log.csv",
        summary="results/{ds}/{method}/train.json",
    log:
        "results/{ds}/logs/train/{method}.log",
    benchmark:
        "results/{ds}/benchmarks/train/{method}.tsv"
    conda:
        "../../envs/actloc.yaml"
    # One thread a process: a head's step on cached features is too small to gain from intra-op
    # threads (the demo's LoSA step: 660 ms with one, 652 with two), and methods then train side
    # by side. Several processes (train.gpus) train data-parallel, a GPU each, on one node.
    threads: training_processes
    resources:
        mem_mb=memory(lambda wildcards: 16000 * training_processes(wildcards)),
        runtime=720,
        gpu=lambda wildcards: GPU * training_processes(wildcards),
        nodes=1,
    params:
        launcher=launcher(training_processes),
        subset=lambda wildcards: dataset(wildcards)["train_subset"],
        settings=train_settings,
        # Not an output: it must outlive a failed or killed job, which resumes from it.
        checkpoint="results/{ds}/{method}/checkpoint.pt",
        device=config["device"],
        backbone=tuned_backbone_option,
        expect=expected_stores,
    shell:
        "{params.launcher}actloc train --index {input.index:q} --annotations {input.annotations:q}"
        " --subset {params.subset} --settings {params.settings:q} {params.backbone}"
        " --out-model {output.model:q} --out-log {output.log_csv:q} --out-summary {output.summary:q}"
        " --checkpoint {params.checkpoint:q} --expect {params.expect:q} --device {params.device:q}"
        " --threads 1 2> {log:q}"
