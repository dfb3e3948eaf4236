"""Person re-identification robust to low-quality crops: Market-1501 data, LQ degradations, timm
backbones, metric learning, HQ->LQ distillation (RLQ), Market evaluation, galleries in the index.

Modules (one concept each; nothing heavy is imported by `import reid`):

* `data`        Market-1501 layout -> `(path, pid, camid)` lists
* `sampler`     identity-balanced P x K batches
* `degrade`     pixelation, defocus/motion blur, JPEG, downscale; the fixed `--lq` protocol
* `transforms`  resize / flip / pad-crop / random erasing, paired clean + LQ views
* `attributes`  coarse attribute targets from the Market attribute CSVs
* `weights`     ImageNet weights from packaged files (offline) or the timm hub
* `model`       backbone + GeM/avg pooling + BN-neck -> embedding; save / load
* `heads`       ID classifier and attribute heads (training only)
* `losses`      metric (triplet / circle via pytorch-metric-learning), center, distillation, attributes
* `training`    `train_reid(data, out, TrainOptions)`
* `metrics`     `evaluate_rank` (CMC + mAP), k-reciprocal `re_ranking`
* `evaluation`  feature extraction, `evaluate_model`
* `encoder`     a model as an `indexer` image encoder
* `gallery`     build / add / remove / query galleries, adapter upgrade
"""
