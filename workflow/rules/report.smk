rule report:
    input:
        maps=per_method("map.csv"),
        summaries=per_method("train.json"),
        stage_a=lambda wildcards: stage_a_summaries(wildcards).values(),
    output:
        csv=report(
            "results/{ds}/map.csv",
            caption="../report/map.rst",
            category="{ds}",
            labels={"figure": "mAP table"},
        ),
        md="results/{ds}/map.md",
    log:
        "results/{ds}/logs/report.log",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=10,
    params:
        methods=methods_of,
        stage_a=stage_a_args,
        protocol=lambda wildcards: evaluation_protocol(dataset(wildcards)),
    shell:
        "actloc report --methods {params.methods} --maps {input.maps:q} --summaries {input.summaries:q}"
        " {params.stage_a} --protocol {params.protocol:q}"
        " --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"
