from django import forms

from .models import Project


class ImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header (title, description or text, optional id and tag) or JSON Lines.")


class ProjectSettingsForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = [
            "name",
            "guidelines",
            "annotations_per_item",
            "order",
            "lease_minutes",
            "review_policy",
            "review_sample_percent",
        ]
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 12})}
        help_texts = {
            "guidelines": "Shown beside every item. Markdown: paragraphs, - lists, **bold**, `code`, # headings.",
        }

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def clean_annotations_per_item(self):
        k = self.cleaned_data["annotations_per_item"]
        if not 1 <= k <= 20:
            raise forms.ValidationError("Annotations per item must be between 1 and 20.")
        return k

    def clean_review_sample_percent(self):
        p = self.cleaned_data["review_sample_percent"]
        if p > 100:
            raise forms.ValidationError("A percentage is at most 100.")
        return p
