/**
 * Per-page title and HTTP status. Each page calls usePageMeta(). On the server,
 * the collector that renderPage() provides through PageMetaContext stores the
 * values, and in the browser the hook sets document.title.
 */
import { createContext } from 'preact';
import { useContext, useEffect } from 'preact/hooks';

export const SHOP_NAME = 'Enddel Shop';

/**
 * The collector for one server render. Null in the browser. It is a context
 * value, not a module variable, because one V8 context may run several renders
 * at once while each waits on a lazy route.
 */
export const PageMetaContext = createContext(null);

/** Return the document title for a page title. */
export function documentTitle(title) {
  return title ? `${title} · ${SHOP_NAME}` : SHOP_NAME;
}

/** Declare the current page's title, description and HTTP status. */
export function usePageMeta({ title, description = '', status = 200 }) {
  const collector = useContext(PageMetaContext);
  if (collector) {
    collector.title = title;
    collector.description = description;
    collector.status = status;
  }

  useEffect(() => {
    document.title = documentTitle(title);
  }, [title]);
}
