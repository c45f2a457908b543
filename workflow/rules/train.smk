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
    # One thread: a head's step on cached features is too small to gain from intra-op threads
    # (the demo's LoSA step: 660 ms with one, 652 with two), and methods then train side by side.
    threads: 1
    resources:
        mem_mb=memory(16000),
        runtime=720,
        gpu=GPU,
    params:
        subset=lambda wildcards: dataset(wildcards)["train_subset"],
        settings=train_settings,
        # Not an output: it must outlive a failed or killed job, which resumes from it.
        checkpoint="results/{ds}/{method}/checkpoint.pt",
        device=config["device"],
        backbone=tuned_backbone_option,
        expect=expected_stores,
    shell:
        "actloc train --index {input.index:q} --annotations {input.annotations:q}"
        " --subset {params.subset} --settings {params.settings:q} {params.backbone}"
        " --out-model {output.model:q} --out-log {output.log_csv:q} --out-summary {output.summary:q}"
        " --checkpoint {params.checkpoint:q} --expect {params.expect:q} --device {params.device:q}"
        " --threads {threads} 2> {log:q}"
