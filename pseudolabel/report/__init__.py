"""The run's report: rendered from each stage's JSON (:mod:`.render`), its pictures (:mod:`.plots`), the
latent study and the EDA (:mod:`.study`) and the audit's figures (:mod:`.audit`)."""
from pseudolabel.report.plots import (
                                      confusion_plot,
                                      curves_plot,
                                      final_plots,
                                      folder_title,
                                      resort_plot,
                                      review_curve_plot,
                                      sample_grid,
                                      scatter_plot,
                                      score_caption,
)
from pseudolabel.report.render import RUN_SUMMARY, render, review_curve_section

__all__ = ["RUN_SUMMARY", "confusion_plot", "curves_plot", "final_plots", "folder_title", "render", "resort_plot",
           "review_curve_plot", "review_curve_section", "sample_grid", "scatter_plot", "score_caption"]
