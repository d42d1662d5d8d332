from django.urls import path

from . import api, api_review, views, views_agreement, views_export, views_review

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:slug>/", views.dashboard, name="dashboard"),
    path("p/<slug:slug>/annotate/", views.annotate, name="annotate"),
    path("p/<slug:slug>/annotate/next/", views.annotate_next, name="annotate_next"),
    path("p/<slug:slug>/annotate/submit/", views.annotate_submit, name="annotate_submit"),
    path("p/<slug:slug>/annotate/skip/", views.annotate_skip, name="annotate_skip"),
    path("p/<slug:slug>/annotate/undo/", views.annotate_undo, name="annotate_undo"),
    path("p/<slug:slug>/guidelines/", views.guidelines, name="guidelines"),
    path("p/<slug:slug>/import/", views.import_page, name="import"),
    path("p/<slug:slug>/settings/", views.settings_page, name="settings"),
    path("p/<slug:slug>/review/", views_review.review_page, name="review"),
    path("p/<slug:slug>/review/decide/", views_review.review_decide, name="review_decide"),
    path("p/<slug:slug>/agreement/", views_agreement.agreement, name="agreement"),
    path("p/<slug:slug>/export/", views_export.export_page, name="export"),
    path("p/<slug:slug>/export/jobs/<str:job_id>/", views_export.export_job, name="export_job"),
    path("p/<slug:slug>/export/jobs/<str:job_id>/download/", views_export.export_job_download, name="export_job_download"),
]

api_urlpatterns = [
    path("auth/token/", api.obtain_token, name="api-token"),
    path("projects/", api.ProjectList.as_view(), name="api-projects"),
    path("projects/<slug:slug>/", api.ProjectDetail.as_view(), name="api-project"),
    path("projects/<slug:slug>/import/", api.import_file, name="api-import"),
    path("projects/<slug:slug>/claim/", api.claim, name="api-claim"),
    path("projects/<slug:slug>/annotations/", api.submit, name="api-submit"),
    path("projects/<slug:slug>/skip/", api.skip, name="api-skip"),
    path("projects/<slug:slug>/undo/", api.undo, name="api-undo"),
    path("projects/<slug:slug>/review/queues/", api_review.review_queues, name="api-review-queues"),
    path("projects/<slug:slug>/review/claim/", api_review.claim_review, name="api-review-claim"),
    path("projects/<slug:slug>/review/decisions/", api_review.decide, name="api-review-decide"),
    path("projects/<slug:slug>/gold/", api_review.gold_labels, name="api-gold"),
    path("projects/<slug:slug>/export/", views_export.ExportDownload.as_view(), name="api-export"),
    path("projects/<slug:slug>/exports/", views_export.ExportJobs.as_view(), name="api-export-jobs"),
    path("projects/<slug:slug>/exports/<str:job_id>/", views_export.ExportJobDetail.as_view(), name="api-export-job"),
    path(
        "projects/<slug:slug>/exports/<str:job_id>/download/",
        views_export.ExportJobDownload.as_view(),
        name="api-export-job-download",
    ),
]
