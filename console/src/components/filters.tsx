/**
 * A filter bar bound to the URL's query string: editing fields and pressing Apply writes a new
 * URL, so every filtered view can be shared as a link.
 */

import { useEffect, useState } from "preact/hooks";
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";

import { useQueryFilters } from "../hooks";
import { parseLocalTime } from "../format";

export interface FilterField {
  name: string;
  label: string;
  /** text (default), datetime (datetime-local), select (with options). */
  type?: "text" | "datetime" | "select";
  options?: [string, string][];
  placeholder?: string;
}

export function FilterBar({ fields }: { fields: FilterField[] }) {
  const [query, setQuery] = useQueryFilters();
  const [draft, setDraft] = useState<Record<string, string>>(query);
  useEffect(() => setDraft(query), [JSON.stringify(query)]);
  const apply = (event: Event) => {
    event.preventDefault();
    const next: Record<string, string> = { ...query };
    for (const field of fields) next[field.name] = (draft[field.name] ?? "").trim();
    setQuery(next);
  };
  const clear = () => {
    const next: Record<string, string> = { ...query };
    for (const field of fields) delete next[field.name];
    setQuery(next);
  };
  return (
    <form class="filters" onSubmit={apply} data-testid="filters">
      {fields.map((field) => (
        <label key={field.name}>
          {field.label}
          {field.type === "select" ? (
            <select
              name={field.name}
              value={draft[field.name] ?? ""}
              onChange={(event) => setDraft({ ...draft, [field.name]: (event.target as HTMLSelectElement).value })}
            >
              {(field.options ?? []).map(([value, label]) => (
                <option key={value} value={value}>
                  {label}
                </option>
              ))}
            </select>
          ) : field.type === "datetime" ? (
            <input
              name={field.name}
              type="datetime-local"
              value={draft[field.name] ?? ""}
              onInput={(event) => setDraft({ ...draft, [field.name]: (event.target as HTMLInputElement).value })}
            />
          ) : (
            <input
              name={field.name}
              type="text"
              placeholder={field.placeholder}
              value={draft[field.name] ?? ""}
              onInput={(event) => setDraft({ ...draft, [field.name]: (event.target as HTMLInputElement).value })}
            />
          )}
        </label>
      ))}
      <div class="filter-actions">
        <button type="submit" class="primary">
          Apply
        </button>
        <button type="button" class="link" onClick={clear}>
          Clear
        </button>
      </div>
    </form>
  );
}

/** A common.v1.TimeRange from the `from` and `to` query values, or undefined when neither is set. */
export function timeRangeOf(query: Record<string, string>): { startTime?: Timestamp; endTime?: Timestamp } | undefined {
  const from = parseLocalTime(query.from);
  const to = parseLocalTime(query.to);
  if (!from && !to) return undefined;
  return {
    ...(from ? { startTime: timestampFromDate(from) } : {}),
    ...(to ? { endTime: timestampFromDate(to) } : {}),
  };
}

export const TIME_FIELDS: FilterField[] = [
  { name: "from", label: "From", type: "datetime" },
  { name: "to", label: "To", type: "datetime" },
];

/** Select options from a generated enum (value 0, UNSPECIFIED, reads "any"). */
export function enumOptions(values: Record<string, string | number>): [string, string][] {
  const options: [string, string][] = [["", "any"]];
  for (const [name, value] of Object.entries(values)) {
    if (typeof value === "number" && value !== 0) options.push([name.toLowerCase(), name.toLowerCase().replace(/_/g, " ")]);
  }
  return options;
}

/** The enum value a select option stands for (0 for "any" or an unknown name). */
export function enumValue(values: Record<string, string | number>, option: string | undefined): number {
  if (!option) return 0;
  const value = values[option.toUpperCase()];
  return typeof value === "number" ? value : 0;
}
