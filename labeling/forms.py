from django import forms

from .models import Project


class ImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header (title, description or text, optional id and tag) or JSON Lines.")


MODE_FIXED = (
    "The mode is fixed once a project has items: labels given as single categories are not sets, "
    "nor the other way round. Create a new project in the other mode and import the items there."
)


class ProjectSettingsForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = [
            "name",
            "mode",
            "allow_none_of_these",
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
        if self.instance.pk and self.instance.mode_is_fixed():
            self.fields["mode"].help_text = MODE_FIXED

    def clean_mode(self):
        mode = self.cleaned_data["mode"]
        changed = self.instance.pk and mode != self.instance.mode
        if changed and self.instance.mode_is_fixed():
            raise forms.ValidationError(MODE_FIXED)
        return mode

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("allow_none_of_these") and cleaned.get("mode") != Project.Mode.MULTI:
            self.add_error("allow_none_of_these", "Only a multi-label project can allow “none of these”.")
        return cleaned

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
