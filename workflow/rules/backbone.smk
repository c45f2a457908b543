rule backbone:
    input:
        lambda wildcards: config["backbones"][wildcards.backbone].get("checkpoint", []),
    output:
        "results/backbones/{backbone}.json",
    log:
        "results/logs/backbone/{backbone}.log",
    wildcard_constraints:
        backbone="|".join(map(re.escape, BACKBONES)) or "no-backbone",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(
            lambda wildcards: config["backbones"][wildcards.backbone]["mem_mb"]
        ),
        runtime=30,
    params:
        args=backbone_args,
    shell:
        "actloc backbone --name {wildcards.backbone:q} {params.args} --out {output:q} 2> {log:q}"
