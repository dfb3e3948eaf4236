"""Person re-identification: Market-1501 data, LQ degradations, timm backbones, distillation, evaluation."""
