# LoFi's stage A: the dataset's backbone and a head trained end to end on the decoded videos at
# low fidelity. Its tuned backbone is then cached (cache rules) and a fresh head trained on it
# (train rule), like any other backbone and method.
rule lofi:
    input:
        videos="results/{ds}/videos.json",
        annotations="results/{ds}/annotations.json",
        backbone=lambda wildcards: f"results/backbones/{dataset(wildcards)['backbone']}.json",
    output:
        checkpoint="results/{ds}/{method}/backbone.pth",
        backbone="results/{ds}/{method}/backbone.json",
        log_csv="results/{ds}/{method}/stage_a_log.csv",
        summary="results/{ds}/{method}/stage_a.json",
    log:
        "results/{ds}/logs/lofi/{method}.log",
    benchmark:
        "results/{ds}/benchmarks/lofi/{method}.tsv"
    wildcard_constraints:
        method="|".join(map(re.escape, LOFI)) or "no-lofi-method",
    conda:
        "../../envs/actloc.yaml"
    # Two threads a process (decoding beside the step); several processes (train.gpus) train
    # data-parallel, a GPU each, on one node.
    threads: lambda wildcards: 2 * stage_a_processes(wildcards)
    resources:
        mem_mb=memory(
            lambda wildcards: 2
            * config["backbones"][dataset(wildcards)["backbone"]]["mem_mb"]
            * stage_a_processes(wildcards)
        ),
        runtime=1440,
        gpu=lambda wildcards: GPU * stage_a_processes(wildcards),
        nodes=1,
    params:
        launcher=launcher(stage_a_processes),
        subset=lambda wildcards: dataset(wildcards)["train_subset"],
        settings=lofi_train_settings,
        # Not an output: it must outlive a failed or killed job, which resumes from it.
        checkpoint="results/{ds}/{method}/stage_a_checkpoint.pt",
        device=config["device"],
    shell:
        "{params.launcher}actloc train --index {input.videos:q} --annotations {input.annotations:q}"
        " --subset {params.subset} --settings {params.settings:q} --backbone {input.backbone:q}"
        " --backbone-name {wildcards.method:q} --out-model {output.checkpoint:q}"
        " --out-backbone {output.backbone:q} --out-log {output.log_csv:q} --out-summary {output.summary:q}"
        " --checkpoint {params.checkpoint:q} --device {params.device:q} --threads 2 2> {log:q}"
