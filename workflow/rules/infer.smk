rule infer:
    input:
        model="results/{ds}/{method}/model.pt",
        index=cache_index,
        annotations="results/{ds}/annotations.json",
        classifier=classifier_file,
    output:
        "results/{ds}/{method}/detections.json",
    log:
        "results/{ds}/logs/infer/{method}.log",
    benchmark:
        "results/{ds}/benchmarks/infer/{method}.tsv"
    conda:
        "../../envs/actloc.yaml"
    threads: 1  # as train
    resources:
        mem_mb=memory(8000),
        runtime=60,
        gpu=GPU,
    params:
        subset=lambda wildcards: dataset(wildcards)["test_subset"],
        device=config["device"],
        classifier=lambda wildcards: classifier_options(dataset(wildcards)),
        expect=expected_stores,
    shell:
        "actloc infer --model {input.model:q} --index {input.index:q} --annotations {input.annotations:q}"
        " --subset {params.subset} --out {output:q} --expect {params.expect:q} --device {params.device:q}"
        " --threads {threads}"
        " {params.classifier} 2> {log:q}"
